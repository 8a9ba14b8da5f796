"""The assets, in the order data takes them: drops -> events -> ledger -> findings -> reports.

Each asset calls one function of the domain core and describes its result
(row counts, a markdown preview, per-currency totals, the files it came from).
Tables are handed on as Parquet files in the storage folder, not through an IO
manager: a downstream asset reads what its upstream wrote, by a fixed path.

`raw_log_drops` and `parsed_drop` are partitioned by drop (the set of new files
the drop sensor saw settle in one tick); everything from `parsed_events` on is
one table over all drops, rebuilt by declarative automation when a drop lands
(or is given up: see `coverage.py`).

Every asset is retried within its run when it raises (RETRY: after 5 s, then
15 s): each attempt rewrites the same folder whole, so a retry can never count a
drop twice or leave half a table.
"""

import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal

import dagster as dg
import polars as pl

from calo_assets.analysis import Coverage, analysis_of
from calo_assets.anomalies import detect_anomalies
from calo_assets.atomic import new_folder
from calo_assets.catalog import ANOMALIES, EVENTS, FILES, LEDGER, SYNC_ERRORS, TRANSACTIONS
from calo_assets.combine import combine
from calo_assets.defs.config import AnalysisConfig, refuse
from calo_assets.defs.coverage import EAGER_UNTIL_DROPS_SETTLE, missing_drops
from calo_assets.defs.failures import failures_since
from calo_assets.defs.resources import MANIFEST, InboxFolder, ReportsFolder, StorageFolder, drop_key
from calo_assets.files import file_sha256
from calo_assets.ledger import build_ledger
from calo_assets.outputs import write_all
from calo_assets.parsed import ParsedLogs
from calo_assets.reading import read_logs
from calo_assets.summary import currency_totals, ledger_checks

drops = dg.DynamicPartitionsDefinition(name="drops")
#: In-run retries of a step that raised, with back-off: attempts at 0 s, +5 s, +15 s.
RETRY = dg.RetryPolicy(max_retries=2, delay=5, backoff=dg.Backoff.EXPONENTIAL)

#: Characters that would make log text a link, an image, emphasis or a table cell edge in markdown.
MARKDOWN_SPECIAL = re.compile(r"[\\`*_\[\]()!|#~]")
PREVIEW_ROWS = 20
CELL_CHARS = 80

# -- how results are described ------------------------------------------------------------------


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        text = f"{value.normalize():f}" if value else "0"
    elif isinstance(value, datetime):
        text = value.isoformat(timespec="milliseconds")
    else:
        text = str(value)
    text = text.replace("\r", " ").replace("\n", " ")
    text = text if len(text) <= CELL_CHARS else text[: CELL_CHARS - 1] + "…"
    # log text stays text: no link, image, emphasis or HTML when the UI renders the markdown
    return MARKDOWN_SPECIAL.sub(r"\\\g<0>", text).replace("<", "&lt;").replace(">", "&gt;")


def markdown(frame: pl.DataFrame, columns: Sequence[str] = (), rows: int = PREVIEW_ROWS) -> dg.MetadataValue:
    """The first rows of a frame as a markdown table (a preview, not the data)."""
    cols = [c for c in (columns or frame.columns) if c in frame.columns]
    if not cols or frame.height == 0:
        return dg.MetadataValue.md(f"_no rows_ ({', '.join(cols)})" if cols else "_no rows_")
    lines = ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in frame.select(cols).head(rows).iter_rows()]
    if frame.height > rows:
        lines += ["", f"_first {rows} of {frame.height:,} rows_"]
    return dg.MetadataValue.md("\n".join(lines))


def transaction_counts_by_currency(transactions: pl.DataFrame) -> dict[str, dict[str, int]]:
    counts = (transactions.group_by("currency").agg(pl.len().alias("transactions"),
                                                    pl.col("userId").n_unique().alias("users"))
              .sort("currency", nulls_last=True))
    return {str(row["currency"]): {"transactions": row["transactions"], "users": row["users"]}
            for row in counts.iter_rows(named=True)}


def parsed_metadata(parsed: ParsedLogs) -> dict[str, dg.MetadataValue]:
    files = parsed.files
    status = dict(zip(*files.group_by("status").len().sort("status").to_dict(as_series=False).values()))
    return {
        "dagster/row_count": dg.MetadataValue.int(parsed.transactions.height),
        "row_counts": dg.MetadataValue.json({name: frame.height for name, frame in parsed.tables().items()}),
        "preview": markdown(parsed.transactions, TRANSACTIONS.preview),
        "currency_totals": dg.MetadataValue.json(transaction_counts_by_currency(parsed.transactions)),
        "source_files": markdown(files, FILES.preview),
        "files_by_status": dg.MetadataValue.json({str(k): int(v) for k, v in status.items()}),
        "reconciliation": dg.MetadataValue.json(parsed.reconciliation()),
    }


# -- drops ---------------------------------------------------------------------------------------


class DropFile(dg.Config):
    path: str
    size: int
    sha256: str = ""  # empty for a file listed only to be reported as skipped
    skip: str = ""  # why the file is not a log (junk by name, empty), or empty
    duplicate_of: str = ""  # the file (or drop) whose content this one repeats, or empty


class DropManifest(dg.Config):
    """The files of one drop, as the sensor saw them (empty: reuse the drop's stored manifest)."""

    files: list[DropFile] = []


@dg.asset(partitions_def=drops, group_name="drops", kinds={"file"}, retry_policy=RETRY)
def raw_log_drops(context: dg.AssetExecutionContext, config: DropManifest, inbox: InboxFolder,
                  storage: StorageFolder) -> dg.MaterializeResult:
    """One drop of log files in the inbox: their names, sizes and sha256, fixed at the time of the drop."""
    key = context.partition_key
    if config.files:
        files = [f.model_dump() for f in config.files]
    elif storage.has("drops", key, "raw"):
        files = storage.manifest(key)
    else:
        raise refuse(f"drop {key} has no file list: drops are registered by the drop sensor")
    changed = []
    for f in files:
        if f["skip"]:
            continue
        path = inbox.root / f["path"]
        now = file_sha256(path) if path.is_file() else ""
        if now != f["sha256"]:
            changed.append(f["path"])
            context.log.warning(f"{f['path']} changed since the sensor saw it ({f['sha256'][:12]} -> "
                                f"{now[:12] or 'gone'}); this drop is parsed as it is now, a new drop follows")
    logs = [(f["path"], f["sha256"]) for f in files if not f["skip"]]
    if drop_key(logs) != key:
        context.log.warning(f"the files listed do not make drop key {key} (got {drop_key(logs)})")
    storage.write(("drops", key, "raw"), {}, {MANIFEST: {"drop": key, "files": files}})
    table = pl.DataFrame(files, schema={"path": pl.String, "size": pl.Int64, "sha256": pl.String, "skip": pl.String,
                                        "duplicate_of": pl.String})
    return dg.MaterializeResult(metadata={
        "dagster/row_count": dg.MetadataValue.int(len(logs)),
        "files": markdown(table, rows=200),
        "file_count": dg.MetadataValue.int(len(logs)),
        "skipped_files": dg.MetadataValue.int(len(files) - len(logs)),
        "bytes": dg.MetadataValue.int(sum(f["size"] for f in files if not f["skip"])),
        "changed_since_sensor": dg.MetadataValue.json(changed),
        "inbox": dg.MetadataValue.path(str(inbox.root)),
    })


@dg.asset(partitions_def=drops, group_name="drops", deps=[raw_log_drops], kinds={"polars", "parquet"},
          retry_policy=RETRY)
def parsed_drop(context: dg.AssetExecutionContext, inbox: InboxFolder, storage: StorageFolder) -> dg.MaterializeResult:
    """The transactions, events and rejects of one drop's files (and nothing else of the inbox)."""
    key = context.partition_key
    files = storage.manifest(key)
    parsed = read_logs(inbox.root, only={f["path"] for f in files})
    storage.write(("drops", key, "parsed"), parsed.tables())
    return dg.MaterializeResult(metadata=parsed_metadata(parsed))


# -- events over all drops ---------------------------------------------------------------------


#: Rebuilt with whatever is upstream of it in the same run: when an upstream asset is requested in this tick,
#: this one is too, even if its own last materialization fell in the same tick (which resets `eager()`).
EAGER = (dg.AutomationCondition.eager()
         | (dg.AutomationCondition.any_deps_match(dg.AutomationCondition.will_be_requested())
            & ~dg.AutomationCondition.in_progress()).with_label("an upstream asset is requested now"))
PARSED_EVENTS = TRANSACTIONS.asset  # the folder of all parsed tables
COVERAGE_DOC = "coverage.json"


@dg.asset(group_name="events", deps=[parsed_drop], automation_condition=EAGER_UNTIL_DROPS_SETTLE,
          kinds={"polars", "parquet"}, retry_policy=RETRY)
def parsed_events(context: dg.AssetExecutionContext, storage: StorageFolder) -> dg.MaterializeResult:
    """Every parsed drop put together, duplicates collapsed: a file dropped twice counts once.

    A drop that is not parsed (given up, or still being tried when this runs) is
    left out and recorded, with its files and the reason, in `coverage.json`: the
    report is then marked incomplete and the `all_drops_parsed` check fails.
    """
    keys = context.instance.get_dynamic_partitions(drops.name)
    covered = [k for k in keys if storage.has("drops", k, "parsed")]
    missing = missing_drops(context.instance, storage, keys, covered)
    for drop in missing:
        context.log.warning(f"drop {drop['drop']} ({len(drop['files'])} file(s)) left out: {drop['reason']}")
    if not covered:
        raise refuse("no drop has been parsed yet: put log files in the inbox and let the drop sensor see them")
    parsed = combine([storage.parsed(("drops", k, "parsed")) for k in covered])
    storage.write(PARSED_EVENTS, parsed.tables(), {COVERAGE_DOC: {"drops": covered, "missing_drops": missing}})
    return dg.MaterializeResult(metadata={**parsed_metadata(parsed), "drops": dg.MetadataValue.json(covered),
                                          "complete": dg.MetadataValue.bool(not missing),
                                          "missing_drops": dg.MetadataValue.json(missing)})


def stored_coverage(storage: StorageFolder) -> dict:
    """{"drops": [...], "missing_drops": [...]} of the stored parsed_events."""
    return storage.document(PARSED_EVENTS, COVERAGE_DOC)


@dg.asset(group_name="events", deps=[parsed_events], automation_condition=EAGER, kinds={"polars", "parquet"},
          retry_policy=RETRY)
def sync_errors(storage: StorageFolder) -> dg.MaterializeResult:
    """What the Lambda logged as 'subscription and payment balance are not in sync'."""
    frame = storage.parsed(PARSED_EVENTS).sync_errors
    storage.write(SYNC_ERRORS.asset, {SYNC_ERRORS.name: frame})
    return dg.MaterializeResult(metadata={
        "dagster/row_count": dg.MetadataValue.int(frame.height),
        "users": dg.MetadataValue.int(frame["userId"].n_unique()),
        "linked_to_a_transaction": dg.MetadataValue.int(frame["transactionId"].is_not_null().sum()),
        "preview": markdown(frame, SYNC_ERRORS.preview),
        "source_files": dg.MetadataValue.int(frame["sourceFile"].n_unique()),
    })


# -- ledger and findings -------------------------------------------------------------------------


CONFIG_DOC = "config.json"


def ledger_settings(storage: StorageFolder):
    """The settings the stored ledger was built with: its findings and report use the same."""
    return AnalysisConfig(**storage.document(LEDGER.asset, CONFIG_DOC)).to_settings()


@dg.asset(group_name="ledger", deps=[parsed_events, sync_errors], automation_condition=EAGER,
          kinds={"polars", "parquet"}, retry_policy=RETRY)
def ledger(config: AnalysisConfig, storage: StorageFolder) -> dg.MaterializeResult:
    """One row per transaction with every check recomputed and explained (the money rules are the run config)."""
    settings = config.to_settings()
    frame = build_ledger(storage.table(TRANSACTIONS), storage.table(SYNC_ERRORS), settings)
    storage.write(LEDGER.asset, {LEDGER.name: frame}, {CONFIG_DOC: config.model_dump()})
    flags = ledger_checks(frame)
    return dg.MaterializeResult(metadata={
        "dagster/row_count": dg.MetadataValue.int(frame.height),
        "users": dg.MetadataValue.int(frame["userId"].n_unique()),
        "preview": markdown(frame, LEDGER.preview),
        # rows without a currency fail ledger_schema; the totals here leave them out rather than fail
        "currency_totals": dg.MetadataValue.json(currency_totals(frame.filter(pl.col("currency").is_not_null()),
                                                                 settings)),
        "flags": dg.MetadataValue.json(flags),
        "settings": dg.MetadataValue.json(config.model_dump()),
        "source_files": dg.MetadataValue.int(frame["sourceFile"].n_unique()),
    })


@dg.asset(group_name="ledger", deps=[ledger, parsed_events], automation_condition=EAGER,
          kinds={"polars", "parquet"}, retry_policy=RETRY)
def anomalies(storage: StorageFolder) -> dg.MaterializeResult:
    """Every finding on the ledger (and on refusals logged without a block), most severe first."""
    frame = detect_anomalies(storage.table(LEDGER), storage.table(EVENTS), ledger_settings(storage))
    storage.write(ANOMALIES.asset, {ANOMALIES.name: frame})
    by_type = frame.group_by("type").len().sort("type")
    by_currency = frame.group_by("currency").len().sort("currency", nulls_last=True)
    return dg.MaterializeResult(metadata={
        "dagster/row_count": dg.MetadataValue.int(frame.height),
        "by_type": dg.MetadataValue.json(dict(zip(by_type["type"].to_list(), by_type["len"].to_list()))),
        "currency_totals": dg.MetadataValue.json({k or "none": v for k, v in zip(by_currency["currency"].to_list(),
                                                                                  by_currency["len"].to_list())}),
        "preview": markdown(frame, ANOMALIES.preview),
        "source_files": dg.MetadataValue.int(frame["sourceFile"].n_unique()),
    })


# -- reports ------------------------------------------------------------------------------------


#: Summary keys recorded apart in the metadata (or not at all): `summary` holds the counts.
SUMMARY_NOT_COUNTS = ("currencies", "settings", "complete", "missing_drops", "failures")


@dg.asset(group_name="reports", deps=[parsed_events, sync_errors, ledger, anomalies], automation_condition=EAGER,
          kinds={"excel", "html"}, retry_policy=RETRY)
def reports(context: dg.AssetExecutionContext, inbox: InboxFolder, storage: StorageFolder,
            reports_folder: ReportsFolder) -> dg.MaterializeResult:
    """report.xlsx, report.html, raw_parsed.csv and summary.json in a new folder per version, plus latest/.

    The report says whether it is complete (the drops left out, with their files
    and why) and lists the runs that failed since the previous version. The
    metadata keys are a contract: the downloads app lists report versions from them.
    """
    stored = stored_coverage(storage)
    covered = stored["drops"]
    coverage = Coverage(missing_drops=tuple(stored["missing_drops"]),
                        failures=tuple(failures_since(context.instance, previous_report_time(context.instance),
                                                      exclude=context.run.run_id)))
    analysis = analysis_of(storage.parsed(PARSED_EVENTS), storage.table(LEDGER), storage.table(ANOMALIES),
                           ledger_settings(storage), f"{inbox.root} ({len(covered)} drop(s))", coverage)
    stamp = analysis.created_at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    folder = reports_folder.root / f"{stamp}-{context.run.run_id[:8]}"
    with new_folder(folder, replace=False) as tmp:  # a version appears whole, and never replaces an earlier one
        written = write_all(analysis, tmp, raw_csv=True)
    reports_folder.publish_latest(folder)
    files = {name: {"path": str(folder / name), "size": (folder / name).stat().st_size,
                    "sha256": file_sha256(folder / name)} for name in sorted(written)}
    counts = {k: v for k, v in analysis.summary.items() if k not in SUMMARY_NOT_COUNTS}
    return dg.MaterializeResult(metadata={
        "folder": dg.MetadataValue.path(str(folder)),
        "files": dg.MetadataValue.json(files),
        "drops": dg.MetadataValue.json(covered),
        "checks_passed": dg.MetadataValue.bool(blocking_checks_passed(context)),
        "currency_totals": dg.MetadataValue.json(json.loads(json.dumps(analysis.summary["currencies"], default=str))),
        "summary": dg.MetadataValue.json(json.loads(json.dumps(counts, default=str))),
        "complete": dg.MetadataValue.bool(coverage.complete),
        "missing_drops": dg.MetadataValue.json(list(coverage.missing_drops)),
        "failures": dg.MetadataValue.json(list(coverage.failures)),
    })


def previous_report_time(instance: dg.DagsterInstance) -> float | None:
    """When the newest report version was recorded (its failures are listed up to then), or None."""
    event = instance.get_latest_materialization_event(reports.key)
    return event.timestamp if event else None


def blocking_checks_passed(context: dg.AssetExecutionContext) -> bool:
    """Whether the latest evaluation of every blocking check of the run's assets passed (they guard the report)."""
    graph = context.job_def.asset_layer.asset_graph
    keys = [key for key in graph.asset_check_keys if graph.get(key).blocking]
    records = [context.instance.get_latest_asset_check_evaluation_record(key) for key in keys]
    return all(r is not None and r.status.value == "SUCCEEDED" for r in records)
