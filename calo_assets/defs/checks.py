"""Checks, next to what they check: blocking rules that stop the reports, an incomplete report, WARN findings.

Blocking (severity ERROR): a schema check on each table the catalog marks as
validated (the parsed transactions and rejects, the ledger, the anomalies), made
by one factory from the catalog's declaration, and the reconciliation of
transaction blocks. When one fails, `reports` of that run is
not materialized and the failure cases are in the check's metadata.

Not blocking, severity ERROR: `all_drops_parsed`, which fails while a drop is
left out of the events. It must not stop the report: the report goes out
marked incomplete, naming the drops missing, rather than not at all.

Non-blocking (severity WARN): what an accountant has to look at (balance
mismatches, continuity breaks, overdrafts, attempted overdrafts, out-of-sync
balances, anomalies by type), each with its count and first rows.
"""

import dagster as dg
import polars as pl

from calo_assets.catalog import ANOMALIES, LEDGER, TABLES, Table
from calo_assets.defs.assets import (PARSED_EVENTS, anomalies, ledger, ledger_settings, markdown, parsed_events,
                                     stored_coverage)
from calo_assets.defs.resources import StorageFolder
from calo_assets.schemas import validate

ROWS = 20
LEDGER_KEY = ["id", "requestId", "messageId", "timestamp"]


# -- blocking: schemas and reconciliation -------------------------------------------------------


def schema_check(table: Table) -> dg.AssetChecksDefinition:
    """A blocking check that the stored table conforms to the pandera schema built from its catalog entry."""

    @dg.asset_check(asset=table.asset, name=f"{table.name}_schema", blocking=True,
                    description=f"The {table.name} table conforms to its declaration (calo_assets.catalog)")
    def _check(storage: StorageFolder) -> dg.AssetCheckResult:
        frame = storage.table(table)
        failures = validate(table, frame, ledger_settings(storage) if table is LEDGER else None)
        by_check = failures.group_by("check").len().sort("check") if failures.height else failures
        return dg.AssetCheckResult(passed=failures.height == 0, metadata={
            "rows_checked": dg.MetadataValue.int(frame.height),
            "failure_cases": dg.MetadataValue.int(failures.height),
            "failures_by_check": dg.MetadataValue.json(
                dict(zip(by_check["check"].to_list(), by_check["len"].to_list())) if failures.height else {}),
            "first_failures": markdown(failures.with_columns(pl.all().cast(pl.String)), rows=ROWS),
        })

    return _check


schema_checks = [schema_check(table) for table in TABLES.values() if table.validated]


@dg.asset_check(asset=ledger, blocking=True, additional_deps=[parsed_events],
                description="Transaction blocks seen = ledger rows + rejected blocks + duplicates collapsed, "
                            "and no transaction is lost or added between parsed_events and the ledger")
def reconciliation(storage: StorageFolder) -> dg.AssetCheckResult:
    parsed = storage.parsed(PARSED_EVENTS)
    frame = storage.table(LEDGER)
    counts = parsed.reconciliation()
    accounted = frame.height + counts["rejected_blocks"] + counts["duplicate_blocks_collapsed"]
    lost = parsed.transactions.join(frame.select(LEDGER_KEY), on=LEDGER_KEY, how="anti", nulls_equal=True)
    added = frame.join(parsed.transactions.select(LEDGER_KEY), on=LEDGER_KEY, how="anti", nulls_equal=True)
    passed = accounted == counts["transaction_blocks_seen"] and lost.height == 0 and added.height == 0
    return dg.AssetCheckResult(passed=passed, metadata={
        **{k: dg.MetadataValue.int(v) for k, v in counts.items()},
        "ledger_rows": dg.MetadataValue.int(frame.height),
        "blocks_accounted_for": dg.MetadataValue.int(accounted),
        "transactions_lost": dg.MetadataValue.int(lost.height),
        "transactions_added": dg.MetadataValue.int(added.height),
        "first_lost": markdown(lost, ["timestamp", "userId", "id", "currency", "amount", "sourceFile", "line"]),
        "first_added": markdown(added, ["timestamp", "userId", "id", "currency", "amount", "sourceFile", "line"]),
    })


@dg.asset_check(asset=parsed_events, description="Every drop of log files is in the events: none was given up "
                                                 "or is still being parsed (not blocking: the report goes out "
                                                 "marked incomplete)")
def all_drops_parsed(storage: StorageFolder) -> dg.AssetCheckResult:
    coverage = stored_coverage(storage)
    missing = coverage["missing_drops"]
    return dg.AssetCheckResult(passed=not missing, severity=dg.AssetCheckSeverity.ERROR, metadata={
        "drops_parsed": dg.MetadataValue.int(len(coverage["drops"])),
        "drops_missing": dg.MetadataValue.int(len(missing)),
        "files_missing": dg.MetadataValue.int(sum(len(d["files"]) for d in missing)),
        "missing_drops": dg.MetadataValue.json(missing),
    })


# -- WARN: findings an accountant reads ------------------------------------------------------------


FINDING_COLUMNS = ["timestamp", "userId", "id", "currency", "type", "action", "outcome", "amount", "oldBalance",
                   "newBalance"]
PROVENANCE = ["sourceFile", "line"]


def ledger_finding(name: str, rows: pl.Expr, explain: list[str], description: str) -> dg.AssetChecksDefinition:
    """A WARN check on the ledger: passes when no row matches `rows`, else shows the count and first rows."""

    @dg.asset_check(asset=ledger, name=name, description=description)
    def _check(storage: StorageFolder) -> dg.AssetCheckResult:
        hits = storage.table(LEDGER).filter(rows)
        by_currency = hits.group_by("currency").len().sort("currency")
        return dg.AssetCheckResult(passed=hits.height == 0, severity=dg.AssetCheckSeverity.WARN, metadata={
            "count": dg.MetadataValue.int(hits.height),
            "by_currency": dg.MetadataValue.json(dict(zip(by_currency["currency"].to_list(),
                                                          by_currency["len"].to_list()))),
            "first_rows": markdown(hits, FINDING_COLUMNS + explain + PROVENANCE, rows=ROWS),
        })

    return _check


balance_mismatches = ledger_finding(
    "balance_mismatches", pl.col("balanceMismatch"),
    ["expectedNewBalance", "balanceDifference", "suggestedAdjustment", "balanceExplanation"],
    "Logged newBalance differs from oldBalance +/- (amount - vat) by more than the tolerance")
continuity_breaks = ledger_finding(
    "continuity_breaks", pl.col("continuityBreak"),
    ["continuityFollows", "continuityDelta", "continuityReason"],
    "A transaction's oldBalance does not follow the previous balance of the same user")
overdrafts = ledger_finding(
    "overdrafts", pl.col("overdraft") & ~pl.col("attemptedOverdraft"),
    ["expectedNewBalance", "overdraftReason", "overdraftExplanation"],
    "Booked overdrafts: the expected or logged new balance is negative (attempted ones are a separate check)")
attempted_overdrafts = ledger_finding(
    "attempted_overdrafts", pl.col("attemptedOverdraft"),
    ["expectedNewBalance", "overdraftReason", "overdraftExplanation"],
    "Debits the Lambda refused because the balance would have gone negative")
out_of_sync = ledger_finding(
    "out_of_sync", pl.col("inSync") == False,  # noqa: E712 - null means the payment balance was not logged
    ["paymentBalance", "newBalanceFilled", "syncExplanation", "syncErrorLine"],
    "The payment balance differs from the subscription balance after the transaction")


@dg.asset_check(asset=anomalies, description="Anomalies found, by type, with the first rows of each type")
def anomalies_by_type(storage: StorageFolder) -> dg.AssetCheckResult:
    frame = storage.table(ANOMALIES)
    by_type = frame.group_by("type", "severity").len().sort("type")
    sections = []
    for kind in by_type["type"].to_list():
        part = frame.filter(pl.col("type") == kind)
        sections.append(f"**{kind}** ({part.height:,})\n\n"
                        + markdown(part, ["severity", "userId", "transactionId", "currency", "timestamp", "details",
                                          "sourceFile", "line"], rows=5).value)
    return dg.AssetCheckResult(passed=frame.height == 0, severity=dg.AssetCheckSeverity.WARN, metadata={
        "count": dg.MetadataValue.int(frame.height),
        "by_type": dg.MetadataValue.json({row["type"]: row["len"] for row in by_type.iter_rows(named=True)}),
        "first_rows": dg.MetadataValue.md("\n\n".join(sections) or "_no anomalies_"),
    })
