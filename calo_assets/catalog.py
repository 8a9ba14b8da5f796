"""The catalog: every table the product hands on, declared once.

For each table: its columns with their Polars types, whether they may be null
and what values they must hold; the rules across columns that must hold on
every row; the asset whose storage folder keeps it; what a preview shows. The
parsed tables (`parsed.ParsedLogs`), the ledger's and the findings' columns,
the pandera schemas (`schemas.py`), the storage folder's files, the Dagster
checks and previews, and the reports' money columns all read these
declarations: a new column is declared here, once.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

MONEY = pl.Decimal(38, 18)  # a logged amount: exact, up to 18 places
TIMESTAMP = pl.Datetime("ms", "UTC")
OUTCOMES = ("applied", "already_synced", "failed", "refused", "unknown")
TYPES = ("DEBIT", "CREDIT")
CURRENCY_CODE = r"^[A-Z]{3}$"
#: Every finding type, with its severity: the values of the anomalies' `type` and `severity` columns.
SEVERITY = {
    "BalanceMismatch": "high", "Overdraft": "high", "DuplicateTxId": "high", "CurrencyMismatch": "high",
    "ContinuityBreak": "medium", "OutOfSync": "medium", "RefusedDebit": "medium", "InvalidAction": "medium",
    "MADSpike": "medium", "RapidManualDeduction": "medium",
    "Burst": "low", "RepeatDelivery": "low", "MissingField": "low", "AfterHours": "low", "Weekend": "low",
    "RoundingPattern": "low",
}
ANOMALY_TYPES = tuple(SEVERITY)


@dataclass(frozen=True)
class Column:
    """A column's type and what its values must be. `dtype` None: money at the run's scale (computed money)."""

    dtype: pl.DataType | None
    nullable: bool = True
    values: tuple[str, ...] = ()  # a closed vocabulary
    pattern: str | None = None  # a regular expression every value matches
    positive: bool = False
    not_blank: bool = False

    @property
    def money(self) -> bool:
        return self.dtype is None or isinstance(self.dtype, pl.Decimal)


@dataclass(frozen=True)
class Rule:
    """A rule across columns that must hold on every row, named for the person reading a failure."""

    name: str
    holds: pl.Expr
    error: str


@dataclass(frozen=True)
class Table:
    name: str
    columns: dict[str, Column]
    asset: str  # the asset whose storage folder keeps the table
    preview: tuple[str, ...] = ()
    rules: tuple[Rule, ...] = ()
    unique: tuple[str, ...] = ()
    validated: bool = False  # a blocking schema check guards it before any report is made of it

    @property
    def names(self) -> list[str]:
        return list(self.columns)

    @property
    def file(self) -> str:
        return f"{self.name}.parquet"

    def schema(self, scale: int = 18) -> dict[str, pl.DataType]:
        """Column name -> Polars type; computed money at `scale` places (see `ledger.money_scale`)."""
        return {name: c.dtype if c.dtype is not None else pl.Decimal(38, scale) for name, c in self.columns.items()}

    def building_schema(self) -> dict[str, pl.DataType]:
        """The schema rows are built with: time stamps as the text the log holds (`parsed.with_times` parses them)."""
        return {name: pl.String if dtype == TIMESTAMP else dtype for name, dtype in self.schema().items()}


def _text(nullable: bool = True, **checks) -> Column:
    return Column(pl.String, nullable, **checks)


def _provenance() -> dict[str, Column]:
    return {"sourceFile": _text(False), "line": Column(pl.Int64, False, positive=True),
            "endLine": Column(pl.Int64), "requestId": _text(False), "messageId": _text(False)}


#: The columns a transaction has as it is read, in the order the raw CSV lists them after its provenance.
_TRANSACTION = {
    "id": _text(False), "userId": _text(False), "currency": _text(False, pattern=CURRENCY_CODE),
    "type": _text(values=TYPES), "source": _text(), "action": _text(),
    "amount": Column(MONEY, False), "vat": Column(MONEY), "oldBalance": Column(MONEY, False),
    "newBalance": Column(MONEY), "paymentBalance": Column(MONEY),
    "userBalance": Column(MONEY), "updatePaymentBalance": Column(pl.Boolean), "metadata": _text(),
    "paymentMethod": _text(), "paymentProvider": _text(), "brand": _text(), "kitchen": _text(),
    "shape": _text(False, values=("typed", "old")), "jsonMerged": Column(pl.Boolean),
    "outcome": _text(False, values=OUTCOMES), "outcomeLine": Column(pl.Int64),
    **_provenance(), "timestamp": Column(TIMESTAMP, False),
}

TRANSACTIONS = Table(
    "transactions", _TRANSACTION, "parsed_events", validated=True,
    preview=("timestamp", "userId", "id", "currency", "type", "action", "amount", "vat", "oldBalance", "newBalance",
             "outcome", "sourceFile", "line"),
    rules=(Rule("type_iff_typed_shape", pl.col("type").is_null() == (pl.col("shape") == "old"),
                "type is logged exactly on typed-shape rows"),))

_EVENT = {
    "kind": _text(), "sourceFile": _text(), "line": Column(pl.Int64), "timestamp": Column(TIMESTAMP),
    "requestId": _text(), "messageId": _text(), "level": _text(),
    "userId": _text(), "transactionId": _text(), "action": _text(),
    "subscriptionBalance": Column(MONEY), "paymentBalance": Column(MONEY), "currentBalance": Column(MONEY),
    "metric": _text(), "durationMs": _text(), "maxMemoryMb": _text(), "errorType": _text(), "text": _text(),
}
EVENTS = Table("events", _EVENT, "parsed_events")
#: The events the Lambda logged as "not in sync": the same columns, kept by the `sync_errors` asset.
SYNC_ERRORS = Table("sync_errors", _EVENT, "sync_errors",
                    preview=("timestamp", "userId", "transactionId", "action", "subscriptionBalance", "paymentBalance",
                             "currentBalance", "sourceFile", "line"))
REJECTS = Table("rejects", {
    "sourceFile": _text(False), "line": Column(pl.Int64, False, positive=True), "endLine": Column(pl.Int64),
    "timestamp": Column(TIMESTAMP), "requestId": _text(), "messageId": _text(), "kind": _text(False),
    "reason": _text(False, not_blank=True), "excerpt": _text(),
}, "parsed_events", validated=True)
FILES = Table("files", {
    "path": _text(), "size": Column(pl.Int64), "sha256": _text(), "status": _text(), "reason": _text(),
    "gzip": Column(pl.Boolean), "truncated": Column(pl.Boolean), "lines": Column(pl.Int64),
    "decompressedBytes": Column(pl.Int64), "invalidUtf8": Column(pl.Int64), "longLines": Column(pl.Int64),
    "records": Column(pl.Int64), "transactionBlocks": Column(pl.Int64),
}, "parsed_events", preview=("path", "status", "size", "sha256", "records", "transactionBlocks", "reason"))
RECORD_COUNTS = Table("record_counts", {"sourceFile": _text(), "kind": _text(), "count": Column(pl.Int64)},
                      "parsed_events")
#: Rows collapsed as duplicates, per table (and rejected transaction blocks apart).
DUPLICATES = Table("duplicates", {"table": _text(), "collapsed": Column(pl.Int64)}, "parsed_events")
#: What reading a drop hands on, in the order `ParsedLogs` holds them.
PARSED = (TRANSACTIONS, EVENTS, REJECTS, FILES, RECORD_COUNTS, DUPLICATES)

_COMPUTED_MONEY = Column(None, False)
_FLAG = Column(pl.Boolean, False)
#: The ledger's columns, in the order an accountant reads them: the transaction's own, and each check with
#: its figures and the words that explain it.
_LEDGER = {
    "timestamp": _TRANSACTION["timestamp"], "userId": _TRANSACTION["userId"], "id": _TRANSACTION["id"],
    "currency": _TRANSACTION["currency"], "type": _text(False, values=TYPES), "typeInferred": _FLAG,
    "source": _TRANSACTION["source"], "action": _TRANSACTION["action"], "outcome": _TRANSACTION["outcome"],
    "amount": _TRANSACTION["amount"], "vat": _TRANSACTION["vat"], "netAmount": Column(None),
    "oldBalance": _TRANSACTION["oldBalance"], "newBalance": _TRANSACTION["newBalance"],
    "newBalanceMissing": _FLAG, "newBalanceFilled": _COMPUTED_MONEY, "expectedNewBalance": _COMPUTED_MONEY,
    "balanceDifference": Column(None), "balanceMismatch": _FLAG, "suggestedAdjustment": _COMPUTED_MONEY,
    "balanceExplanation": _text(False),
    "chainLink": _FLAG, "continuityBreak": _FLAG, "continuityFollows": _text(), "continuityDelta": Column(None),
    "continuityReason": _text(),
    "overdraft": _FLAG, "overdraftReason": _text(values=("expected<0", "actual<0", "both")),
    "attemptedOverdraft": _FLAG, "overdraftExplanation": _text(),
    "paymentBalance": _TRANSACTION["paymentBalance"], "paymentBalanceNegative": _FLAG, "inSync": Column(pl.Boolean),
    "syncExplanation": _text(), "syncErrorLine": Column(pl.Int64), "syncErrorSubscriptionBalance": Column(MONEY),
    "paymentChainBreak": Column(pl.Boolean), "paymentChainExpected": Column(None), "paymentChainReason": _text(),
    "places": Column(pl.Int64), "vatMissing": Column(pl.Boolean), "shape": _TRANSACTION["shape"],
    "jsonMerged": _TRANSACTION["jsonMerged"], "userBalance": _TRANSACTION["userBalance"],
    "paymentMethod": _TRANSACTION["paymentMethod"], "paymentProvider": _TRANSACTION["paymentProvider"],
    "brand": _TRANSACTION["brand"], "kitchen": _TRANSACTION["kitchen"], "metadata": _TRANSACTION["metadata"],
    "updatePaymentBalance": _TRANSACTION["updatePaymentBalance"],
    **{name: _TRANSACTION[name] for name in ("sourceFile", "line", "endLine", "requestId", "messageId")},
    "outcomeLine": _TRANSACTION["outcomeLine"],
}
LEDGER = Table(
    "ledger", _LEDGER, "ledger", validated=True,
    preview=("timestamp", "userId", "id", "currency", "type", "action", "outcome", "amount", "oldBalance",
             "newBalance", "expectedNewBalance", "balanceMismatch", "continuityBreak", "overdraft", "inSync",
             "sourceFile", "line"),
    rules=(
        Rule("adjustment_iff_mismatch", (pl.col("suggestedAdjustment") == 0) == ~pl.col("balanceMismatch"),
             "suggestedAdjustment is zero exactly when there is no balance mismatch"),
        Rule("overdraft_has_reason", pl.col("overdraft") == pl.col("overdraftReason").is_not_null(),
             "every overdraft says why, and only overdrafts do"),
        Rule("attempted_means_refused",
             ~pl.col("attemptedOverdraft") | (pl.col("overdraft") & (pl.col("outcome") == "refused")),
             "an attempted overdraft is an overdraft the Lambda refused"),
        Rule("breaks_only_on_links", ~pl.col("continuityBreak") | pl.col("chainLink"),
             "only links of the balance chain can break it"),
        Rule("inferred_iff_old_shape", pl.col("typeInferred") == (pl.col("shape") == "old"),
             "the direction is inferred exactly on old-shape rows"),
    ),
    unique=("requestId", "messageId", "id", "timestamp"))
#: The ledger's computed money columns (all at the run's money scale).
COMPUTED_MONEY = tuple(name for name, c in LEDGER.columns.items() if c.dtype is None)

ANOMALIES = Table("anomalies", {
    "type": _text(False, values=ANOMALY_TYPES), "severity": _text(False, values=("high", "medium", "low")),
    "transactionId": _text(), "userId": _text(), "currency": _text(), "timestamp": Column(TIMESTAMP),
    "relatedIds": _text(), "details": _text(False, not_blank=True), "sourceFile": _text(), "line": Column(pl.Int64),
}, "anomalies", validated=True,
    preview=("type", "severity", "userId", "transactionId", "currency", "timestamp", "details", "sourceFile", "line"))

#: Every table, by name.
TABLES = {t.name: t for t in (*PARSED, SYNC_ERRORS, LEDGER, ANOMALIES)}
