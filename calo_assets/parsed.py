"""What reading a drop hands on: the parsed tables, their columns, and the figures read off them.

Both ways of reading (the columnar fast path and the line-by-line full parser)
build rows with these schemas, so their outputs can be compared frame for frame.
Timestamps are built as ISO text and turned into UTC datetimes by `with_times`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

MONEY = pl.Decimal(38, 18)
TIMESTAMP = pl.Datetime("ms", "UTC")
MONEY_FIELDS = ("amount", "vat", "oldBalance", "newBalance", "paymentBalance")
OUTCOMES = ("applied", "already_synced", "failed", "refused", "unknown")

TRANSACTION_SCHEMA = {
    "id": pl.String, "userId": pl.String, "currency": pl.String, "type": pl.String,
    "source": pl.String, "action": pl.String,
    **{name: MONEY for name in MONEY_FIELDS},
    "userBalance": MONEY, "updatePaymentBalance": pl.Boolean, "metadata": pl.String,
    "paymentMethod": pl.String, "paymentProvider": pl.String, "brand": pl.String, "kitchen": pl.String,
    "shape": pl.String, "jsonMerged": pl.Boolean, "outcome": pl.String, "outcomeLine": pl.Int64,
    "sourceFile": pl.String, "line": pl.Int64, "endLine": pl.Int64,
    "requestId": pl.String, "messageId": pl.String, "timestamp": pl.String,
}
EVENT_SCHEMA = {
    "kind": pl.String, "sourceFile": pl.String, "line": pl.Int64, "timestamp": pl.String,
    "requestId": pl.String, "messageId": pl.String, "level": pl.String,
    "userId": pl.String, "transactionId": pl.String, "action": pl.String,
    "subscriptionBalance": MONEY, "paymentBalance": MONEY, "currentBalance": MONEY,
    "metric": pl.String, "durationMs": pl.String, "maxMemoryMb": pl.String, "errorType": pl.String,
    "text": pl.String,
}
REJECT_SCHEMA = {
    "sourceFile": pl.String, "line": pl.Int64, "endLine": pl.Int64, "timestamp": pl.String,
    "requestId": pl.String, "messageId": pl.String, "kind": pl.String, "reason": pl.String,
    "excerpt": pl.String,
}
FILE_SCHEMA = {
    "path": pl.String, "size": pl.Int64, "sha256": pl.String, "status": pl.String, "reason": pl.String,
    "gzip": pl.Boolean, "truncated": pl.Boolean, "lines": pl.Int64, "decompressedBytes": pl.Int64,
    "invalidUtf8": pl.Int64, "longLines": pl.Int64, "records": pl.Int64, "transactionBlocks": pl.Int64,
}
COUNT_SCHEMA = {"sourceFile": pl.String, "kind": pl.String, "count": pl.Int64}
DUPLICATE_SCHEMA = {"table": pl.String, "collapsed": pl.Int64}  # rows collapsed as duplicates, per table
#: The tables whose rows come from records (each row carries its file and line).
ROW_SCHEMAS = {"transactions": TRANSACTION_SCHEMA, "events": EVENT_SCHEMA, "rejects": REJECT_SCHEMA}
TABLES = ("transactions", "events", "rejects", "files", "record_counts", "duplicates")


@dataclass
class ParsedLogs:
    """The output of reading a drop: every table carries file and line of its rows."""

    transactions: pl.DataFrame
    events: pl.DataFrame
    rejects: pl.DataFrame
    files: pl.DataFrame
    record_counts: pl.DataFrame  # sourceFile, kind, count: the records each file holds
    duplicates: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=DUPLICATE_SCHEMA))

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
