"""The run's figures in one dict: `summary.json`, the CLI's closing screen, the report cards.

Keys are a contract (see the README); money is decimal text rounded to the
currency's places, and no figure adds two currencies.
"""

from __future__ import annotations

from decimal import Decimal

import polars as pl

from calo_assets.anomalies import ANOMALY_TYPES
from calo_assets.parsed import OUTCOMES, ParsedLogs
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
    checks["refusals_without_block"] = refusals.filter(
        pl.col("transactionId").is_null() | ~pl.col("transactionId").is_in(ledger["id"].implode())).height
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
    out: dict[str, dict] = {}
    for cur in sorted(ledger["currency"].unique().to_list()):
        part = ledger.filter(pl.col("currency") == cur)
        p = settings.places(cur)
        debit = _sum(part.filter(pl.col("type") == "DEBIT")["amount"])
        credit = _sum(part.filter(pl.col("type") == "CREDIT")["amount"])
        applied = part.filter(pl.col("chainLink"))
        out[cur] = {
            "transactions": part.height,
            "users": part["userId"].n_unique(),
            "debit": fmt(debit, p),
            "credit": fmt(credit, p),
            "net": fmt(credit - debit, p),
            "debit_applied": fmt(_sum(applied.filter(pl.col("type") == "DEBIT")["amount"]), p),
            "credit_applied": fmt(_sum(applied.filter(pl.col("type") == "CREDIT")["amount"]), p),
            "places": p,
        }
    return out


def _sum(values: pl.Series) -> Decimal:
    """Exact sum in Python Decimal (a Polars Decimal sum is exact too, but this keeps the type plain)."""
    return sum((v for v in values.to_list() if v is not None), Decimal(0))
