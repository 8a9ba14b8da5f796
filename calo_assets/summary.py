"""The run's figures in one dict: `summary.json`, the CLI's closing screen, the report cards.

Keys are a contract (see the README); money is decimal text rounded to the
currency's places, and no figure adds two currencies.
"""

from __future__ import annotations

from decimal import localcontext

import polars as pl

from calo_assets.catalog import ANOMALY_TYPES, OUTCOMES
from calo_assets.parsed import ParsedLogs
from calo_assets.money import fmt
from calo_assets.settings import Settings

CHECKS = {
    "balance_mismatch": "balanceMismatch",
    "continuity_break": "continuityBreak",
    "overdraft": "overdraft",
    "attempted_overdraft": "attemptedOverdraft",
    "payment_balance_negative": "paymentBalanceNegative",
    "payment_chain_break": "paymentChainBreak",
}


def build_summary(parsed: ParsedLogs, ledger: pl.DataFrame, anomalies: pl.DataFrame, settings: Settings) -> dict:
    files = parsed.files
    status = dict(zip(*files.group_by("status").len().to_dict(as_series=False).values()))
    outcomes = dict(zip(*ledger.group_by("outcome").len().to_dict(as_series=False).values()))
    checks = ledger_checks(ledger)
    kinds = dict(zip(*anomalies.group_by("type").len().to_dict(as_series=False).values()))
    refusals = parsed.events.filter(pl.col("kind") == "refusal")
    checks["refused_debits"] = refusals.height
    checks["refusals_without_block"] = refusals.join(  # a refusal naming no transaction counts too
        ledger.select("id"), left_on="transactionId", right_on="id", how="anti").height
    return {
        "transactions": ledger.height,
        "users": ledger["userId"].n_unique(),
        "rejects": parsed.rejects.height,
        "sync_errors": parsed.sync_errors.height,
        "files": {
            "read": int(status.get("read", 0)),
            "skipped": int(status.get("skipped", 0)),
            "truncated": int(files["truncated"].sum() or 0),
            "refused": int(status.get("refused", 0)),
            "duplicate": int(status.get("duplicate", 0)),
        },
        "currencies": currency_totals(ledger, settings),
        "outcomes": {name: int(outcomes.get(name, 0)) for name in OUTCOMES},
        "checks": checks,
        "anomalies": {name: int(kinds.get(name, 0)) for name in sorted(ANOMALY_TYPES)},
        "reconciliation": parsed.reconciliation(),
        "records": parsed.records_by_kind(),
        "duplicates_collapsed": dict(zip(parsed.duplicates["table"], parsed.duplicates["collapsed"])),
        "settings": {
            "tolerance": str(settings.tolerance),
            "default_places": settings.default_places,
            "currency_places": dict(sorted(settings.currency_places.items())),
        },
    }


def ledger_checks(ledger: pl.DataFrame) -> dict[str, int]:
    """How many ledger rows each check flags (out of sync: only where paymentBalance is logged)."""
    checks = {key: int(ledger[col].sum() or 0) for key, col in CHECKS.items()}
    checks["out_of_sync"] = int((ledger["inSync"] == False).sum() or 0)  # noqa: E712 - null means not logged
    return checks


def currency_totals(ledger: pl.DataFrame, settings: Settings) -> dict[str, dict]:
    """Per currency: transactions, users, debit and credit (gross amounts, as logged) and net."""
    debit, credit, link = pl.col("type") == "DEBIT", pl.col("type") == "CREDIT", pl.col("chainLink")
    parts = {"debit": debit, "credit": credit, "debit_applied": link & debit, "credit_applied": link & credit}
    amounts = ledger.select(  # whole units and fractions summed apart: a million amounts below 1e20 need 44 digits
        "currency", "userId", *[rows.alias(name) for name, rows in parts.items()],
        pl.col("amount").truncate().cast(pl.Decimal(38, 0)).alias("_whole"),
        (pl.col("amount") - pl.col("amount").truncate()).alias("_fraction"))
    totals = amounts.group_by("currency").agg(
        pl.len().alias("transactions"), pl.col("userId").n_unique().alias("users"),
        *[pl.col("_whole").filter(name).sum().alias(f"{name}Whole") for name in parts],
        *[pl.col("_fraction").filter(name).sum().alias(f"{name}Fraction") for name in parts]).sort("currency")
    out: dict[str, dict] = {}
    with localcontext() as ctx:
        ctx.prec = 60  # exact: the only rounding is the currency's half-up
        for row in totals.iter_rows(named=True):
            p = settings.places(row["currency"])
            sums = {name: row[f"{name}Whole"] + row[f"{name}Fraction"] for name in parts}
            out[row["currency"]] = {
                "transactions": row["transactions"],
                "users": row["users"],
                "debit": fmt(sums["debit"], p),
                "credit": fmt(sums["credit"], p),
                "net": fmt(sums["credit"] - sums["debit"], p),
                "debit_applied": fmt(sums["debit_applied"], p),
                "credit_applied": fmt(sums["credit_applied"], p),
                "places": p,
            }
    return out
