"""The row selections both reports show, chosen once so the workbook and the dashboard agree.

Every frame that holds money also holds `currency` and `places` (the currency's
decimal places), so a renderer can format each amount in its own currency;
`places` is for formatting and is not shown as a column of its own.
"""

from __future__ import annotations

import polars as pl

from calo_assets.analysis import Analysis
from calo_assets.settings import Settings
from calo_assets.summary import CHECKS

#: Every ledger check under the summary's name, as a true/false expression over ledger rows.
CHECK_FLAGS: dict[str, pl.Expr] = {
    **{name: pl.col(column).fill_null(False) for name, column in CHECKS.items()},
    "out_of_sync": pl.col("inSync").eq(False).fill_null(False),  # null: paymentBalance not logged
}

#: The Reconciliation sheet: every row with the balance and continuity working; mismatches and breaks first.
RECONCILIATION_COLUMNS = [
    "timestamp", "userId", "id", "currency", "type", "outcome", "amount", "vat", "oldBalance", "newBalance",
    "expectedNewBalance", "balanceDifference", "balanceMismatch", "suggestedAdjustment", "balanceExplanation",
    "chainLink", "continuityFollows", "continuityDelta", "continuityBreak", "continuityReason",
    "sourceFile", "line", "places",
]
MISMATCH_COLUMNS = [
    "timestamp", "userId", "id", "currency", "type", "source", "action", "outcome", "amount", "vat",
    "oldBalance", "newBalance", "expectedNewBalance", "balanceDifference", "suggestedAdjustment",
    "balanceExplanation", "sourceFile", "line", "places",
]
BREAK_COLUMNS = [
    "timestamp", "userId", "id", "currency", "action", "outcome", "oldBalance", "continuityFollows",
    "continuityDelta", "continuityReason", "sourceFile", "line", "places",
]
OVERDRAFT_COLUMNS = [
    "record", "timestamp", "userId", "id", "currency", "type", "source", "action", "outcome", "amount", "vat",
    "oldBalance", "newBalance", "expectedNewBalance", "lowestBalance", "overdraftReason", "attemptedOverdraft",
    "refused", "suggestedAdjustment", "paymentBalance", "currentBalance", "overdraftExplanation",
    "sourceFile", "line", "places",
]
LEDGER_ROW = "ledger row"
REFUSAL_WITHOUT_BLOCK = "refusal without transaction block"


def flagged() -> pl.Expr:
    """True on a ledger row that fails any check: the rows both reports mark."""
    return pl.any_horizontal(list(CHECK_FLAGS.values()))


def reconciles(rec: dict[str, int]) -> bool:
    """Whether every transaction block seen is a transaction, a rejected block or a collapsed duplicate."""
    return rec["transactions"] + rec["rejected_blocks"] + rec["duplicate_blocks_collapsed"] == \
        rec["transaction_blocks_seen"]


def places_of(settings: Settings) -> pl.Expr:
    """The row's currency places, for frames that do not come from the ledger."""
    return (pl.col("currency").replace_strict(settings.currency_places, default=settings.default_places,
                                              return_dtype=pl.Int64).alias("places"))


def unreconciled() -> pl.Expr:
    """A balance mismatch or a continuity break: what the Reconciliation sheet is about."""
    return (pl.col("balanceMismatch") | pl.col("continuityBreak")).fill_null(False)


def mismatches(ledger: pl.DataFrame) -> pl.DataFrame:
    """Balance mismatches, largest difference first."""
    return (ledger.filter(pl.col("balanceMismatch"))
            .sort(pl.col("balanceDifference").abs(), descending=True, maintain_order=True)
            .select(MISMATCH_COLUMNS))


def continuity_breaks(ledger: pl.DataFrame) -> pl.DataFrame:
    """Continuity breaks, largest jump first."""
    return (ledger.filter(pl.col("continuityBreak"))
            .sort(pl.col("continuityDelta").abs(), descending=True, maintain_order=True)
            .select(BREAK_COLUMNS))


def overdrafts(analysis: Analysis) -> pl.DataFrame:
    """Overdraft rows of the ledger (deepest first), then the refusals that name no logged block.

    A refusal whose transaction block is absent is still an attempted overdraft,
    but its amount and balances are unknown: it is labelled as such in `record`.
    """
    ledger = analysis.ledger
    rows = (ledger.filter(pl.col("overdraft") | pl.col("attemptedOverdraft"))
            .with_columns(record=pl.lit(LEDGER_ROW), refused=pl.col("outcome") == "refused",
                          lowestBalance=pl.min_horizontal("expectedNewBalance", "newBalance"))
            .sort("lowestBalance", maintain_order=True))
    refusals = (analysis.parsed.events
                .filter((pl.col("kind") == "refusal")
                        & ~pl.col("transactionId").is_in(ledger["id"].implode()).fill_null(False))
                .join(currency_of_user(ledger), on="userId", how="left", maintain_order="left")
                .select(pl.lit(REFUSAL_WITHOUT_BLOCK).alias("record"), "timestamp", "userId",
                        pl.col("transactionId").alias("id"), "currency", pl.lit("refused").alias("outcome"),
                        "currentBalance", pl.lit(True).alias("attemptedOverdraft"), pl.lit(True).alias("refused"),
                        pl.lit("the Lambda refused a debit because the balance would go negative; no transaction "
                               "block of this id is in the logs, so its amount and balances are unknown "
                               "(currentBalance is the balance the refusal logged)").alias("overdraftExplanation"),
                        "sourceFile", "line", places_of(analysis.settings))
                .sort("timestamp", maintain_order=True))
    return pl.concat([rows, refusals], how="diagonal_relaxed").select(OVERDRAFT_COLUMNS)


def currency_of_user(ledger: pl.DataFrame) -> pl.DataFrame:
    """`userId`, `currency`: the currency of each user's first ledger row, for rows that name no currency."""
    return ledger.lazy().group_by("userId").agg(pl.col("currency").first()).collect(engine="streaming")


# The aggregations run on Polars' streaming engine: on a million-row ledger the in-memory one holds
# hundreds of MB of intermediate columns at once, the streaming one a few tens.

def by_user(ledger: pl.DataFrame) -> pl.DataFrame:
    """Per user and currency: counts, gross debit/credit as logged, net, closing balance, flags."""
    debit = pl.col("amount").filter(pl.col("type") == "DEBIT").sum()
    credit = pl.col("amount").filter(pl.col("type") == "CREDIT").sum()
    return (ledger.lazy().group_by("userId", "currency", maintain_order=True)
            .agg(transactions=pl.len(), applied=pl.col("chainLink").sum(), debit=debit, credit=credit,
                 net=credit - debit,
                 closingBalance=pl.col("newBalanceFilled").filter(pl.col("chainLink")).last(),
                 flaggedRows=flagged().sum(),
                 mismatches=CHECK_FLAGS["balance_mismatch"].sum(),
                 continuityBreaks=CHECK_FLAGS["continuity_break"].sum(),
                 overdrafts=CHECK_FLAGS["overdraft"].sum(),
                 outOfSync=CHECK_FLAGS["out_of_sync"].sum(),
                 negativePaymentBalance=CHECK_FLAGS["payment_balance_negative"].sum(),
                 paymentChainBreaks=CHECK_FLAGS["payment_chain_break"].sum(),
                 firstSeen=pl.col("timestamp").min(), lastSeen=pl.col("timestamp").max(),
                 places=pl.col("places").first())
            .collect(engine="streaming"))


def by_source(ledger: pl.DataFrame) -> pl.DataFrame:
    """Per currency, source and direction: count and sums (old-shape rows log no source)."""
    return (ledger.lazy().with_columns(pl.col("source").fill_null("(not logged)"))
            .group_by("currency", "source", "type")
            .agg(transactions=pl.len(), amount=pl.col("amount").sum(), vat=pl.col("vat").sum(),
                 netAmount=pl.col("netAmount").sum(), places=pl.col("places").first())
            .sort("currency", "source", "type")
            .collect(engine="streaming"))


def sync_errors(analysis: Analysis) -> pl.DataFrame:
    """The Lambda's 'not in sync' errors beside the transaction they were logged for."""
    ledger = analysis.ledger
    logged_for = analysis.parsed.sync_errors["transactionId"].implode()
    tx = ledger.filter(pl.col("id").is_in(logged_for)).select(  # only the rows the join can use
        pl.col("id").alias("transactionId"), pl.col("currency").alias("txCurrency"), "action",
        "oldBalance", "newBalance", pl.col("paymentBalance").alias("txPaymentBalance"), "syncExplanation",
    ).unique("transactionId", keep="first", maintain_order=True)
    return (analysis.parsed.sync_errors
            .join(tx, on="transactionId", how="left", maintain_order="left")
            .join(currency_of_user(ledger).rename({"currency": "userCurrency"}), on="userId", how="left",
                  maintain_order="left")
            .with_columns(currency=pl.coalesce("txCurrency", "userCurrency"))
            .select("timestamp", "userId", "transactionId", "currency", "action", "subscriptionBalance",
                    "paymentBalance", "oldBalance", "newBalance", "txPaymentBalance", "syncExplanation",
                    "sourceFile", "line", "requestId", "messageId", places_of(analysis.settings)))


def completeness(summary: dict) -> dict:
    """Whether the report covers every drop, the drops it leaves out, recent failed runs of the automation.
    Summaries made before completeness was tracked lack the keys: they count as complete."""
    return {"complete": summary.get("complete", True), "missing": summary.get("missing_drops") or [],
            "failures": summary.get("failures") or []}
