"""raw_parsed.csv: every parsed transaction as read, with its provenance, for auditing.

Money is the exact decimal the log held (`60.181000000000004` stays so, never
passed through a float); timestamps are ISO 8601 UTC as CloudWatch writes them;
text that a spreadsheet would run as a formula is neutralised. UTF-8, no BOM.
Built with Polars expressions so a million rows export in seconds.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from calo_assets.analysis import Analysis
from calo_assets.catalog import TRANSACTIONS
from calo_assets.reports.safe_text import csv_expr

PROVENANCE = ["sourceFile", "line", "endLine", "requestId", "messageId", "timestamp"]
FIRST = ["id", "userId", "currency", "type", "source", "action", "outcome", "outcomeLine"]
#: Provenance, then what identifies the transaction, then every other parsed field in schema order.
COLUMNS = PROVENANCE + FIRST + [c for c in TRANSACTIONS.names if c not in PROVENANCE + FIRST]


def exact_decimal(column: str) -> pl.Expr:
    """A Decimal column as the shortest exact text: the column's scale padding removed."""
    text = pl.col(column).cast(pl.String)
    return (pl.when(text.str.contains(r"\.")).then(text.str.replace(r"\.?0+$", "")).otherwise(text)
            .str.replace(r"^-0$", "0").alias(column))


def write_raw_csv(analysis: Analysis, path: Path) -> Path:
    """Write every parsed transaction (file order) to `path`."""
    tx = analysis.parsed.transactions.select(COLUMNS)
    schema = tx.schema
    tx = tx.with_columns(
        *[exact_decimal(c) for c in COLUMNS if isinstance(schema[c], pl.Decimal)],
        *[csv_expr(c) for c in COLUMNS if schema[c] == pl.String],
        pl.col("timestamp").dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ"),
    )
    path = Path(path)
    tx.write_csv(path, include_bom=False)
    return path
