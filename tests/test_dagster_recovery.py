"""Recovery in-process: drops given up, retries waited for, failed runs described and recorded, leftovers swept,
dead run workers detected. The same scenarios against the real service are in test_dagster_service.py."""

import json
import os
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import dagster as dg
import pytest

from calo_assets.definitions import defs
from calo_assets.defs import assets as assets_module
from calo_assets.defs.assets import parsed_drop, parsed_events, reports
from calo_assets.defs.coverage import drop_states
from calo_assets.defs.failures import FailedRun, failures_since
from calo_assets.atomic import sweep
from calo_assets.defs.resources import FailureWebhook
from calo_assets.defs.sensors import record_run_failures
from calo_testkit.generator import generate_export
from calo_assets.run_launcher import LocalProcessRunLauncher, worker_alive
from test_dagster_assets import Service, cli_summary, metadata

pytestmark = pytest.mark.filterwarnings("ignore::dagster.BetaWarning")
REBUILT = {a.key for a in (parsed_events, reports)}  # the first and the last asset a rebuild requests


def fail_to_parse(service: Service, monkeypatch, broken: str) -> str:
    """Make a drop of the new files in the inbox, whose parse raises on the paths holding `broken`; its key."""
    real = assets_module.read_logs

    def read_logs(root, **kwargs):
        if any(broken in path for path in kwargs.get("only") or ()):
            raise dg.Failure("the parser raised on this drop", allow_retries=False)  # no back-off wait in tests
        return real(root, **kwargs)

    monkeypatch.setattr(assets_module, "read_logs", read_logs)
    key = service.drop(expect_success=False)
    monkeypatch.setattr(assets_module, "read_logs", real)
    return key


class Drops(Service):
    """A Service (optionally with instance settings) that also runs the automation, tick after tick."""

    def __init__(self, root: Path, **instance_settings):
        super().__init__(root)
        if instance_settings:
            self.instance = dg.DagsterInstance.ephemeral(settings=instance_settings)
        self.automation_cursor = None

    def automation_requests(self) -> set[dg.AssetKey]:
        result = dg.evaluate_automation_conditions(defs=defs, instance=self.instance, cursor=self.automation_cursor)
        self.automation_cursor = result.cursor
        return {k for k in REBUILT if result.get_requested_partitions(k)}


def put_log(service: Service, folder: str, seed: int) -> None:
    generate_export(service.inbox / folder, transactions=40, seed=seed, faults=False)


def test_a_given_up_drop_makes_the_report_incomplete_until_it_is_parsed(tmp_path, monkeypatch):
    service = Drops(tmp_path)
    assert service.automation_requests() == set()
    put_log(service, "good", seed=21)
    good = service.drop()
    assert service.automation_requests() == REBUILT
    assert service.rebuild().success
    assert service.automation_requests() == set()

    put_log(service, "broken", seed=22)
    broken = fail_to_parse(service, monkeypatch, "broken/")
    assert drop_states(service.instance, [broken])[broken].startswith("parse run ")  # no retries here: given up
    assert service.automation_requests() == REBUILT  # a drop given up is news: the report must say so
    result = service.rebuild()
    assert result.success  # the failing check does not stop the report
    check = next(e for e in result.get_asset_check_evaluations() if e.check_name == "all_drops_parsed")
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR

    meta = metadata(result, "reports")
    logs = sorted(f["path"] for f in service.resources["storage"].manifest(broken) if not f["skip"])
    assert logs and all(path.startswith("broken/") for path in logs)
    assert meta["missing_drops"] == [{"drop": broken, "files": logs, "reason": meta["missing_drops"][0]["reason"]}]
    reason = meta["missing_drops"][0]["reason"]
    assert reason.startswith("parse run ") and "parsed_drop: " in reason and "the parser raised on this drop" in reason
    assert meta["complete"] is False and meta["drops"] == [good]
    (failure,) = meta["failures"]
    assert failure["drop"] == broken and failure["step"] == "parsed_drop" and failure["job"]
    summary = json.loads((Path(meta["folder"]) / "summary.json").read_text())
    assert summary["complete"] is False and summary["missing_drops"] == meta["missing_drops"]
    assert summary["failures"] == meta["failures"]
    assert metadata(result, "parsed_events")["missing_drops"] == meta["missing_drops"]
    assert service.automation_requests() == set()  # reported once, not rebuilt tick after tick

    # re-materializing the drop (the partition's Materialize button) brings it back in
    again = dg.materialize([parsed_drop], partition_key=broken, resources=service.resources, instance=service.instance)
    assert again.success
    assert service.automation_requests() == REBUILT
    meta = metadata(service.rebuild(), "reports")
    assert meta["complete"] is True and meta["missing_drops"] == [] and meta["drops"] == [good, broken]
    assert meta["failures"] == []  # listed once, by the version after the failure
    summary = json.loads((Path(meta["folder"]) / "summary.json").read_text())
    assert summary == cli_summary(service.inbox)


def test_a_drop_parsed_while_a_rebuild_finishes_is_not_lost(tmp_path, monkeypatch):
    """A drop re-materialized in the same tick as a rebuild's materializations is still rebuilt into a report.

    (A tick-based trigger such as `eager()` loses it: the dependency's update and the asset's own update fall in
    the same tick, and the asset's own update resets the trigger.) Each rebuild here stands for a run the sensor
    launched: the tick after a request finds it in progress, or just made, and asks nothing."""
    service = Drops(tmp_path)
    put_log(service, "good", seed=25)
    service.drop()
    assert service.automation_requests() == REBUILT
    service.rebuild()
    assert service.automation_requests() == set()
    put_log(service, "broken", seed=26)
    broken = fail_to_parse(service, monkeypatch, "broken/")
    assert service.automation_requests() == REBUILT  # the drop given up is news
    service.rebuild()  # the incomplete report's rebuild ...
    again = dg.materialize([parsed_drop], partition_key=broken, resources=service.resources, instance=service.instance)
    assert again.success  # ... and the drop parsed again, both before the next tick
    assert service.automation_requests() == set()  # the tick right after the request
    assert service.automation_requests() == REBUILT  # and the news is still news at the next one
    meta = metadata(service.rebuild(), "reports")
    assert meta["complete"] is True and broken in meta["drops"]
    assert service.automation_requests() == set()
    assert service.automation_requests() == set()  # nothing left to tell


def test_automation_waits_while_a_failed_drop_will_be_retried(tmp_path, monkeypatch):
    service = Drops(tmp_path, run_retries={"enabled": True, "max_retries": 2})
    assert service.automation_requests() == set()
    put_log(service, "good", seed=23)
    service.drop()
    assert service.automation_requests() == REBUILT
    service.rebuild()
    assert service.automation_requests() == set()
    put_log(service, "flaky", seed=24)
    flaky = fail_to_parse(service, monkeypatch, "flaky/")
    (run,) = service.instance.get_runs(dg.RunsFilter(tags={"dagster/partition": flaky}))
    assert run.tags["dagster/will_retry"] == "true"  # set by Dagster when the failure was recorded
    assert drop_states(service.instance, [flaky]) == {flaky: None}  # pending: its retry is coming
    assert service.automation_requests() == set()
    service.instance.add_run_tags(run.run_id, {"dagster/will_retry": "false"})  # retries spent
    assert drop_states(service.instance, [flaky])[flaky].startswith(f"parse run {run.run_id[:8]} failed")
    assert service.automation_requests() == REBUILT


def test_a_failed_run_is_described_by_its_step_and_the_error_it_raised(tmp_path, monkeypatch):
    service = Drops(tmp_path)
    put_log(service, "broken", seed=25)
    broken = fail_to_parse(service, monkeypatch, "broken/")
    (run,) = service.instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
    failed = FailedRun(service.instance, run)
    record = failed.record()
    assert set(record) == {"run_id", "job", "drop", "step", "error", "time"}
    assert record["drop"] == broken and record["step"] == "parsed_drop"
    assert record["error"].endswith("the parser raised on this drop")
    assert record["time"].endswith("Z") and "\n" not in record["error"]
    assert failed.unbuilt == [(parsed_drop.key, broken)]
    assert failures_since(service.instance, None) == [record]
    assert failures_since(service.instance, time.time()) == []


def test_a_run_failed_from_outside_names_the_step_it_was_in_and_why(tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    run = instance.create_run_for_job(dg.define_asset_job("j", selection=[reports]).resolve(
        asset_graph=defs.resolve_asset_graph()), tags={})
    instance.report_dagster_event(dg.DagsterEvent("STEP_START", "j", step_key="reports"), run_id=run.run_id)
    instance.report_engine_event("Run execution process for x was terminated by signal 9 (SIGKILL).", run)
    instance.report_run_failed(run)
    record = FailedRun(instance, instance.get_run_by_id(run.run_id)).record()
    assert record["step"] == "reports" and record["drop"] is None
    assert record["error"] == "Run execution process for x was terminated by signal 9 (SIGKILL)."


class Hook(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):
        Hook.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_the_failure_sensor_records_the_failure_on_the_unbuilt_asset_and_posts_it(tmp_path, monkeypatch):
    service = Drops(tmp_path)
    put_log(service, "broken", seed=26)
    broken = fail_to_parse(service, monkeypatch, "broken/")
    (run,) = service.instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
    failure_event = service.instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)[0].dagster_event
    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        webhook = FailureWebhook(url=f"http://127.0.0.1:{server.server_port}/hook")
        context = dg.build_run_status_sensor_context(
            sensor_name="record_run_failures", dagster_event=failure_event, dagster_instance=service.instance,
            dagster_run=run, resources={"failure_webhook": webhook}).for_run_failure()
        record_run_failures(context)
    finally:
        server.shutdown()
    expected = FailedRun(service.instance, run).record()
    assert Hook.received == [expected]
    (observation,) = service.instance.fetch_observations(parsed_drop.key, limit=5).records
    seen = observation.asset_observation
    assert seen.partition == broken and "the parser raised on this drop" in seen.description
    assert seen.metadata["step"].value == "parsed_drop" and seen.metadata["failed_run"].value == run.run_id
    assert FailureWebhook(url="http://127.0.0.1:9/closed", timeout_seconds=2).post(expected)  # says why, no raise
    assert FailureWebhook().post(expected) is None  # no URL: nothing to do


def test_leftovers_of_interrupted_writes_are_swept_when_no_other_run_writes(tmp_path):
    service = Drops(tmp_path)
    put_log(service, "good", seed=27)
    key = service.drop()
    service.rebuild()
    storage, reports_root = Path(service.resources["storage"].root), service.reports_root
    leftovers = [storage / ".parsed_events.tmp-0123abcd", storage / "drops" / key / ".parsed.tmp-89abcdef",
                 reports_root / ".20250101T000000Z-deadbeef.tmp-00112233", reports_root / ".latest.tmp-44556677",
                 reports_root / ".latest.old-8899aabb"]
    for folder in leftovers:
        folder.mkdir()
        (folder / "half.parquet").write_bytes(b"half")

    other = dg.DagsterRun(job_name="elsewhere", run_id="0" * 8 + "-0000-0000-0000-000000000000",
                          status=dg.DagsterRunStatus.STARTED)
    service.instance.add_run(other)  # another run may be writing: nothing is touched
    assert service.rebuild(selection=[reports]).success
    assert all(folder.exists() for folder in leftovers)

    service.instance.report_run_failed(other)
    (storage / "anomalies").rename(storage / ".anomalies.old-ccddeeff")  # cut between the two renames of a swap
    assert service.rebuild(selection=[reports]).success
    assert not any(folder.exists() for folder in leftovers)
    assert (storage / "anomalies" / "anomalies.parquet").is_file()  # put back, not thrown away
    assert not list(storage.glob(".*")) and not list(reports_root.glob(".*"))


def test_sweep_leaves_ordinary_folders_alone(tmp_path):
    for name in ("latest", "20250101T000000Z-deadbeef", ".hidden", ".latest.tmp-notahexid"):
        (tmp_path / name).mkdir()
    assert sweep(tmp_path) == []
    assert sweep(tmp_path / "absent") == []


def run_started_by(instance: dg.DagsterInstance, pid: int) -> dg.DagsterRun:
    run = instance.create_run_for_job(dg.define_asset_job("j", selection=[reports]).resolve(
        asset_graph=defs.resolve_asset_graph()), tags={})
    instance.report_dagster_event(dg.DagsterEvent("PIPELINE_START", "j", pid=pid), run_id=run.run_id)
    return instance.get_run_by_id(run.run_id)


def test_the_launcher_tells_run_monitoring_whether_a_run_worker_is_alive():
    instance = dg.DagsterInstance.ephemeral()
    launcher = LocalProcessRunLauncher()
    launcher.register_instance(instance)
    assert launcher.supports_check_run_worker_health
    assert launcher.check_run_worker_health(run_started_by(instance, os.getpid())).status.value == "RUNNING"
    dead = subprocess.Popen(["sleep", "0"])
    dead.wait()
    result = launcher.check_run_worker_health(run_started_by(instance, dead.pid))
    assert result.status.value == "FAILED" and str(dead.pid) in result.msg


def test_a_reused_pid_is_not_taken_for_the_run_worker():
    """After a restart the dead worker's pid may belong to a new process, which started after the run did."""
    later = subprocess.Popen(["sleep", "30"])
    try:
        assert worker_alive(later.pid, time.time())
        assert not worker_alive(later.pid, time.time() - 60)
    finally:
        later.kill()
        later.wait()
    assert not worker_alive(later.pid, time.time())
