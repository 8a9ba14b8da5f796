"""The asset graph in-process (`dg.materialize`) on a generated export, in temporary folders."""

import hashlib
import json
import os
import time
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from calo_assets.analysis import analyze
from calo_assets.catalog import TABLES
from calo_assets.definitions import defs
from calo_assets.defs import assets as assets_module
from calo_assets.defs import checks as checks_module
from calo_assets.defs.assets import anomalies, ledger, parsed_drop, parsed_events, raw_log_drops, reports, sync_errors
from calo_assets.defs.config import AnalysisConfig
from calo_assets.defs.resources import InboxFolder, ReportsFolder, StorageFolder
from calo_assets.defs.sensors import log_drop_sensor
from calo_assets.reading import read_logs
from calo_testkit.generator import generate_export
from calo_assets.outputs import summary_json
from calo_assets.settings import Settings

CHECKS = dg.load_asset_checks_from_modules([checks_module])
DOWNSTREAM = [parsed_events, sync_errors, ledger, anomalies, reports, *CHECKS]
BLOCKING = {"transactions_schema", "rejects_schema", "ledger_schema", "reconciliation", "anomalies_schema"}
WARN = {"balance_mismatches", "continuity_breaks", "overdrafts", "attempted_overdrafts", "out_of_sync",
        "anomalies_by_type"}
NOT_BLOCKING_ERROR = {"all_drops_parsed"}
REPORT_METADATA = {"folder", "files", "drops", "checks_passed", "currency_totals", "summary", "complete",
                   "missing_drops", "failures"}
REPORT_FILES = {"report.xlsx", "report.html", "raw_parsed.csv", "summary.json"}


class Service:
    """The resources of a service in temporary folders, with its own instance."""

    def __init__(self, root: Path):
        self.inbox = root / "inbox"
        self.inbox.mkdir(parents=True, exist_ok=True)
        self.resources = {"inbox": InboxFolder(path=str(self.inbox), settle_seconds=0),
                          "storage": StorageFolder(path=str(root / "storage")),
                          "reports_folder": ReportsFolder(path=str(root / "reports"))}
        self.reports_root = root / "reports"
        self.instance = dg.DagsterInstance.ephemeral()
        self.cursor: str | None = None

    def drop(self, expect_success: bool = True) -> str:
        """Two sensor ticks (see, then settle), then the drop run the sensor asks for."""
        for _ in range(2):
            result = log_drop_sensor(dg.build_sensor_context(instance=self.instance, cursor=self.cursor,
                                                             resources=self.resources))
            self.cursor = result.cursor or self.cursor
        (request,) = result.run_requests
        self.instance.add_dynamic_partitions("drops", [request.partition_key])
        run = dg.materialize([raw_log_drops, parsed_drop], partition_key=request.partition_key,
                             run_config=request.run_config, resources=self.resources, instance=self.instance,
                             raise_on_error=False)
        assert run.success == expect_success
        return request.partition_key

    def rebuild(self, **kwargs) -> dg.ExecuteInProcessResult:
        return dg.materialize(DOWNSTREAM, resources=self.resources, instance=self.instance, **kwargs)


def metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == asset]
    return {k: getattr(v, "value", v) for k, v in event.materialization.metadata.items()}


def cli_summary(inbox: Path) -> dict:
    """summary.json as the CLI computes it for the same folder."""
    return json.loads(summary_json(analyze(read_logs(inbox), Settings())))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def service(tmp_path: Path) -> Service:
    return Service(tmp_path)


def test_the_definitions_load():
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    assert {k.to_user_string() for k in graph.get_all_asset_keys()} == {
        "raw_log_drops", "parsed_drop", "parsed_events", "sync_errors", "ledger", "anomalies", "reports"}
    assert {k.name for k in graph.asset_check_keys} == BLOCKING | WARN | NOT_BLOCKING_ERROR
    assert all(graph.get(k).blocking == (k.name in BLOCKING) for k in graph.asset_check_keys)
    validated = {(t.asset, f"{t.name}_schema") for t in TABLES.values() if t.validated}
    assert validated | {("ledger", "reconciliation")} == \
        {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys if graph.get(k).blocking}
    assert {s.name for s in defs.sensors} == {"log_drop_sensor", "rebuild_after_drops", "record_run_failures"}
    assert all(s.default_status == dg.DefaultSensorStatus.RUNNING for s in defs.sensors)
    assert set(defs.resources) == {"inbox", "storage", "reports_folder", "failure_webhook"}
    assert all(a.op.retry_policy == assets_module.RETRY for a in defs.assets)


def test_the_whole_graph_on_a_generated_drop(service: Service):
    truth = generate_export(service.inbox, transactions=200, seed=1)
    key = service.drop()
    result = service.rebuild()
    assert result.success

    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert set(evaluations) == BLOCKING | WARN | NOT_BLOCKING_ERROR
    assert all(evaluations[name].passed for name in BLOCKING | NOT_BLOCKING_ERROR)
    assert all(evaluations[name].severity == dg.AssetCheckSeverity.WARN for name in WARN)

    cli = analyze(read_logs(service.inbox), Settings())
    assert metadata(result, "ledger")["dagster/row_count"] == truth.transactions == cli.ledger.height

    meta = metadata(result, "reports")
    assert set(meta) == REPORT_METADATA  # a contract with the downloads app
    folder = Path(meta["folder"])
    assert folder.parent == service.reports_root and folder.name.endswith(result.run_id[:8])
    assert set(meta["files"]) == REPORT_FILES
    for name, entry in meta["files"].items():
        path = Path(entry["path"])
        assert path == folder / name and path.stat().st_size == entry["size"] and sha256(path) == entry["sha256"]
        assert sha256(service.reports_root / "latest" / name) == entry["sha256"]
    assert meta["drops"] == [key] and meta["checks_passed"] is True
    assert meta["complete"] is True and meta["missing_drops"] == [] and meta["failures"] == []

    summary = json.loads((folder / "summary.json").read_text())
    assert summary == cli_summary(service.inbox)  # the service and the CLI agree, figure for figure
    assert meta["currency_totals"] == summary["currencies"]
    assert meta["summary"]["transactions"] == truth.transactions
    assert "currencies" not in meta["summary"] and meta["summary"]["files"] == summary["files"]


def test_every_asset_describes_its_result(service: Service):
    generate_export(service.inbox, transactions=60, seed=3)
    service.drop()
    drop_events = service.instance.get_latest_materialization_event(dg.AssetKey("parsed_drop"))
    drop_meta = drop_events.asset_materialization.metadata
    assert {"dagster/row_count", "row_counts", "preview", "currency_totals", "source_files"} <= set(drop_meta)
    assert drop_meta["preview"].value.startswith("| timestamp |")
    raw_event = service.instance.get_latest_materialization_event(dg.AssetKey("raw_log_drops"))
    raw_meta = raw_event.asset_materialization.metadata
    assert "sha256" in raw_meta["files"].value and raw_meta["file_count"].value > 0
    result = service.rebuild()
    for asset in ("parsed_events", "ledger", "anomalies"):
        meta = metadata(result, asset)
        assert {"dagster/row_count", "preview", "currency_totals"} <= set(meta), asset
    currencies = set(metadata(result, "parsed_events")["currency_totals"])
    assert set(metadata(result, "ledger")["currency_totals"]) == currencies


def test_a_new_drop_is_parsed_alone_and_the_ledger_spans_all_drops(service: Service, tmp_path: Path):
    generate_export(tmp_path / "export", transactions=200, seed=2)
    files = sorted(p for p in (tmp_path / "export").rglob("*") if p.is_file())
    half = len(files) // 2
    for batch in (files[:half], files[half:]):
        for path in batch:
            target = service.inbox / path.relative_to(tmp_path / "export")
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(path, target)
        service.drop()
    first, second = service.instance.get_dynamic_partitions("drops")
    storage = Path(service.resources["storage"].root)
    manifest = json.loads((storage / "drops" / second / "raw" / "manifest.json").read_text())
    assert {f["path"] for f in manifest["files"]} == {str(p.relative_to(tmp_path / "export")) for p in files[half:]}
    result = service.rebuild()
    assert result.success
    assert metadata(result, "reports")["drops"] == [first, second]
    summary = json.loads((Path(metadata(result, "reports")["folder"]) / "summary.json").read_text())
    assert summary == cli_summary(service.inbox)  # continuity and duplicates are judged over all drops


def test_a_second_report_never_overwrites_the_first(service: Service):
    generate_export(service.inbox, transactions=60, seed=4)
    service.drop()
    first = Path(metadata(service.rebuild(), "reports")["folder"])
    before = {p.name: sha256(p) for p in first.iterdir()}
    time.sleep(1.1)  # the version folder is named by the second and the run id
    second = Path(metadata(dg.materialize([reports, *CHECKS], selection=[reports], resources=service.resources,
                                          instance=service.instance), "reports")["folder"])
    assert second != first and {p.name: sha256(p) for p in first.iterdir()} == before
    assert {p.name: sha256(p) for p in (service.reports_root / "latest").iterdir()} == \
           {p.name: sha256(p) for p in second.iterdir()}


def test_a_failing_blocking_check_stops_the_reports(service: Service, monkeypatch):
    generate_export(service.inbox, transactions=80, seed=5)
    service.drop()
    real = assets_module.build_ledger

    def bad_ledger(transactions, sync_errors, settings):
        """A ledger that lost its first transaction and the currency of another."""
        frame = real(transactions, sync_errors, settings).slice(1)
        return frame.with_columns(pl.when(pl.int_range(pl.len()) == 0).then(None)
                                  .otherwise(pl.col("currency")).alias("currency"))

    monkeypatch.setattr(assets_module, "build_ledger", bad_ledger)
    result = service.rebuild(raise_on_error=False)
    assert not result.success
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert not evaluations["reconciliation"].passed
    assert evaluations["reconciliation"].metadata["transactions_lost"].value == 1
    assert not evaluations["ledger_schema"].passed
    assert "currency" in evaluations["ledger_schema"].metadata["first_failures"].value
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "ledger" in materialized and "reports" not in materialized
    assert not service.reports_root.exists() or not any(service.reports_root.iterdir())


@pytest.mark.filterwarnings("ignore::dagster.BetaWarning")
def test_automation_waits_for_every_drop_then_rebuilds_once():
    """Several drops landing together: nothing until all are parsed, then one run of everything downstream."""
    instance = dg.DagsterInstance.ephemeral()
    downstream = {a.key for a in (parsed_events, sync_errors, ledger, anomalies, reports)}
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert result.total_requested == 0  # an empty service builds no empty report
    instance.add_dynamic_partitions("drops", ["drop-a", "drop-b"])
    for done in ("drop-a", "drop-b"):
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
        assert result.total_requested == 0  # a drop is still being parsed
        instance.report_runless_asset_event(dg.AssetMaterialization(asset_key="parsed_drop", partition=done))
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    assert {k for k in downstream if result.get_requested_partitions(k)} == downstream
    assert result.total_requested == len(downstream)
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    assert result.total_requested == 0


def test_the_run_config_defaults_are_the_settings_defaults():
    assert AnalysisConfig().to_settings() == Settings()
    custom = AnalysisConfig(tolerance="0.01", currency_places="KWD=3", mad_threshold="4.5",
                            burst_min_transactions=5).to_settings()
    assert custom == replace(Settings(), tolerance=Decimal("0.01"), mad_threshold=Decimal("4.5"),
                             burst_min_transactions=5).with_currency_places({"KWD": 3})
    for bad in ({"tolerance": "abc"}, {"currency_places": "KWD3"}, {"default_places": 11},
                {"rapid_window_seconds": 0}):
        with pytest.raises(dg.Failure):
            AnalysisConfig(**bad).to_settings()
    fields = ledger.op.config_schema.config_type.fields
    assert set(fields) == set(AnalysisConfig.model_fields)  # what the launchpad shows


def test_a_drop_rematerialized_from_the_ui_reuses_its_stored_file_list(service: Service):
    generate_export(service.inbox, transactions=60, seed=6)
    key = service.drop()
    again = dg.materialize([raw_log_drops, parsed_drop], partition_key=key, resources=service.resources,
                           instance=service.instance)  # no run config, as from the launchpad
    assert again.success
    assert service.rebuild().success


def test_log_text_in_previews_stays_text():
    from calo_assets.defs.assets import markdown

    frame = pl.DataFrame({"details": ["![x](http://evil.invalid/t.png) [click](http://x) <b>bold</b> a|b"]})
    text = markdown(frame).value
    assert "](" not in text.replace("\\](", "") and "<b>" not in text and "a\\|b" in text
