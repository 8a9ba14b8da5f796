"""pandera (Polars) schemas of the product's tables: the rules that must always hold.

`validate` returns the failure cases as a frame (empty when valid) instead of
raising, so a check or a report can show a person which rows failed and why.
"""

from __future__ import annotations

import pandera.polars as pa
import polars as pl
from pandera.errors import SchemaErrors

from calo_assets.anomalies import ANOMALY_TYPES
from calo_assets.parsed import MONEY, OUTCOMES, TIMESTAMP
from calo_assets.ledger import money_scale
from calo_assets.settings import Settings

CURRENCY_CODE = r"^[A-Z]{3}$"
TYPES = ["DEBIT", "CREDIT"]


def _provenance() -> dict[str, pa.Column]:
    return {
        "sourceFile": pa.Column(pl.String, nullable=False),
        "line": pa.Column(pl.Int64, pa.Check.gt(0), nullable=False),
        "requestId": pa.Column(pl.String, nullable=False),
        "messageId": pa.Column(pl.String, nullable=False),
    }


def _transaction_columns() -> dict[str, pa.Column]:
    return {
        "id": pa.Column(pl.String, nullable=False),
        "userId": pa.Column(pl.String, nullable=False),
        "currency": pa.Column(pl.String, pa.Check.str_matches(CURRENCY_CODE), nullable=False),
        "amount": pa.Column(MONEY, nullable=False),
        "vat": pa.Column(MONEY, nullable=True),
        "oldBalance": pa.Column(MONEY, nullable=False),
        "newBalance": pa.Column(MONEY, nullable=True),
        "paymentBalance": pa.Column(MONEY, nullable=True),
        "outcome": pa.Column(pl.String, pa.Check.isin(OUTCOMES), nullable=False),
        "timestamp": pa.Column(TIMESTAMP, nullable=False),
        "shape": pa.Column(pl.String, pa.Check.isin(["typed", "old"]), nullable=False),
        **_provenance(),
    }


def _rule(expr: pl.Expr, name: str, error: str) -> pa.Check:
    """A cross-column rule that must hold on every row."""
    return pa.Check(lambda data: data.lazyframe.select(expr), name=name, error=error)


def transactions_schema() -> pa.DataFrameSchema:
    return pa.DataFrameSchema(
        {**_transaction_columns(),
         "type": pa.Column(pl.String, pa.Check.isin(TYPES), nullable=True)},
        checks=[_rule(pl.col("type").is_null() == (pl.col("shape") == "old"), "type_iff_typed_shape",
                      "type is logged exactly on typed-shape rows")],
        name="transactions")


def ledger_schema(settings: Settings) -> pa.DataFrameSchema:
    money = pl.Decimal(38, money_scale(settings))
    flags = ["balanceMismatch", "continuityBreak", "overdraft", "attemptedOverdraft", "paymentBalanceNegative",
             "typeInferred", "chainLink", "newBalanceMissing"]
    return pa.DataFrameSchema(
        {**_transaction_columns(),
         "type": pa.Column(pl.String, pa.Check.isin(TYPES), nullable=False),
         "expectedNewBalance": pa.Column(money, nullable=False),
         "newBalanceFilled": pa.Column(money, nullable=False),
         "suggestedAdjustment": pa.Column(money, nullable=False),
         "overdraftReason": pa.Column(pl.String, pa.Check.isin(["expected<0", "actual<0", "both"]), nullable=True),
         "balanceExplanation": pa.Column(pl.String, nullable=False),
         **{flag: pa.Column(pl.Boolean, nullable=False) for flag in flags}},
        checks=[
            _rule((pl.col("suggestedAdjustment") == 0) == ~pl.col("balanceMismatch"), "adjustment_iff_mismatch",
                  "suggestedAdjustment is zero exactly when there is no balance mismatch"),
            _rule(pl.col("overdraft") == pl.col("overdraftReason").is_not_null(), "overdraft_has_reason",
                  "every overdraft says why, and only overdrafts do"),
            _rule(~pl.col("attemptedOverdraft") | (pl.col("overdraft") & (pl.col("outcome") == "refused")),
                  "attempted_means_refused", "an attempted overdraft is an overdraft the Lambda refused"),
            _rule(~pl.col("continuityBreak") | pl.col("chainLink"), "breaks_only_on_links",
                  "only links of the balance chain can break it"),
            _rule(pl.col("typeInferred") == (pl.col("shape") == "old"), "inferred_iff_old_shape",
                  "the direction is inferred exactly on old-shape rows"),
        ],
        unique=["requestId", "messageId", "id", "timestamp"],
        name="ledger")


def rejects_schema() -> pa.DataFrameSchema:
    return pa.DataFrameSchema({
        "sourceFile": pa.Column(pl.String, nullable=False),
        "line": pa.Column(pl.Int64, pa.Check.gt(0), nullable=False),
        "kind": pa.Column(pl.String, nullable=False),
        "reason": pa.Column(pl.String, pa.Check.str_length(min_value=1), nullable=False),
    }, name="rejects")


def anomalies_schema() -> pa.DataFrameSchema:
    return pa.DataFrameSchema({
        "type": pa.Column(pl.String, pa.Check.isin(ANOMALY_TYPES), nullable=False),
        "severity": pa.Column(pl.String, pa.Check.isin(["high", "medium", "low"]), nullable=False),
        "details": pa.Column(pl.String, pa.Check.str_length(min_value=1), nullable=False),
    }, name="anomalies")


def validate(name: str, frame: pl.DataFrame, settings: Settings | None = None) -> pl.DataFrame:
    """Failure cases of `frame` against the named schema; an empty frame means valid."""
    schemas = {"transactions": transactions_schema, "rejects": rejects_schema, "anomalies": anomalies_schema,
               "ledger": lambda: ledger_schema(settings or Settings())}
    try:
        schemas[name]().validate(frame, lazy=True)
    except SchemaErrors as errors:
        return errors.failure_cases
    return pl.DataFrame(schema={"failure_case": pl.String, "schema_context": pl.String, "column": pl.String,
                                "check": pl.String, "check_number": pl.Int32, "index": pl.Int32})
