"""What reading a drop hands on: the parsed tables (declared in the catalog) and the figures read off them.

Both ways of reading (the columnar fast path and the line-by-line full parser)
build rows with the catalog's schemas, so their outputs can be compared frame
for frame. Timestamps are built as ISO text and turned into UTC datetimes by `with_times`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from calo_assets.catalog import DUPLICATES, EVENTS, PARSED, REJECTS, TRANSACTIONS

#: The tables whose rows come from records (each row carries its file and line).
ROW_TABLES = (TRANSACTIONS, EVENTS, REJECTS)
TABLES = tuple(t.name for t in PARSED)


@dataclass
class ParsedLogs:
    """The output of reading a drop: every table carries file and line of its rows."""

    transactions: pl.DataFrame
    events: pl.DataFrame
    rejects: pl.DataFrame
    files: pl.DataFrame
    record_counts: pl.DataFrame  # sourceFile, kind, count: the records each file holds
    duplicates: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=DUPLICATES.schema()))

    def tables(self) -> dict[str, pl.DataFrame]:
        return {name: getattr(self, name) for name in TABLES}

    @classmethod
    def from_tables(cls, tables: dict[str, pl.DataFrame]) -> ParsedLogs:
        return cls(**{name: tables[name] for name in TABLES})

    @property
    def sync_errors(self) -> pl.DataFrame:
        return self.events.filter(pl.col("kind") == "sync_error")

    def records_by_kind(self) -> dict[str, int]:
        """How many records of each kind the distinct files hold (a duplicate file counts once)."""
        totals = self.record_counts.group_by("kind").agg(pl.col("count").sum()).sort("kind")
        return dict(zip(totals["kind"], totals["count"]))

    def reconciliation(self) -> dict[str, int]:
        """Transaction blocks seen = transactions + rejected blocks + duplicates collapsed."""
        dup = dict(zip(self.duplicates["table"], self.duplicates["collapsed"]))
        block_rejects = self.rejects.filter(pl.col("kind") == "transaction_block").height
        return {
            "transaction_blocks_seen": int(self.files["transactionBlocks"].sum() or 0),
            "transactions": self.transactions.height,
            "rejected_blocks": block_rejects,
            "duplicate_blocks_collapsed": int(dup.get("transactions", 0) + dup.get("rejected_blocks", 0)),
            "json_forms_merged": int(self.transactions["jsonMerged"].sum() or 0),
            "other_rejects": self.rejects.height - block_rejects,
        }


def with_times(frame: pl.DataFrame) -> pl.DataFrame:
    """Log timestamps as UTC datetimes (millisecond precision, as CloudWatch logs them)."""
    return frame.with_columns(
        pl.col("timestamp").str.to_datetime("%Y-%m-%dT%H:%M:%S%.fZ", time_unit="ms", time_zone="UTC", strict=False)
    )
