"""End to end: the real service (`dagster dev`: webserver, daemon, code server) on temporary folders.

Driven the way a person (or a hostile operator) uses it: log files are moved into
the inbox, processes are killed, the reports folder is made unwritable; what the
service made is read back through its GraphQL API and from the report folder.
One service serves the scenarios of this module, in order (the last one kills it
and starts it again on the same folders).

The service runs with `tests/hooks` on its PYTHONPATH: that `sitecustomize` lets a
test stall a run at a chosen point (to kill it there) or make parsing raise, by
creating flag files in the hooks folder. Failed runs are posted to a webhook
served by this test.
"""

import gzip
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from calo_assets.analysis import analyze
from calo_assets.reading import read_logs
from calo_testkit.generator import generate_export
from calo_assets.outputs import summary_json
from calo_assets.settings import Settings

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
HOOKS = REPO / "tests" / "hooks"
REAL_LOGS = Path(__file__).resolve().parents[1].parent / "shared" / "real-logs"
DAGSTER = Path(sys.executable).with_name("dagster")
ASSETS = {"raw_log_drops", "parsed_drop", "parsed_events", "sync_errors", "ledger", "anomalies", "reports"}
BLOCKING = {"transactions_schema", "rejects_schema", "ledger_schema", "reconciliation", "anomalies_schema"}
REPORT_METADATA = {"folder", "files", "drops", "checks_passed", "currency_totals", "summary", "complete",
                   "missing_drops", "failures"}
STARTUP_TIMEOUT = 240
DROP_TIMEOUT = 480

METADATA = """
      metadataEntries {
        label
        ... on JsonMetadataEntry { jsonString }
        ... on PathMetadataEntry { path }
        ... on BoolMetadataEntry { boolValue }
        ... on IntMetadataEntry { intValue }
        ... on MarkdownMetadataEntry { mdStr }
        ... on TextMetadataEntry { text }
      }"""
ASSET_QUERY = """
query {
  assetNodes {
    assetKey { path }
    assetMaterializations(limit: 50) { runId partition timestamp %s }
    assetObservations(limit: 20) { runId partition timestamp description %s }
    assetChecksOrError {
      ... on AssetChecks {
        checks { name blocking executionForLatestMaterialization { status evaluation { success severity } } }
      }
    }
  }
}
""" % (METADATA, METADATA)
RUNS_QUERY = """
query {
  runsOrError { ... on Runs { results { runId jobName status startTime endTime parentRunId tags { key value } } } }
}
"""
LOCATION_QUERY = "query { workspaceOrError { ... on Workspace { locationEntries { name } } } }"
LAUNCH = """
mutation($params: ExecutionParams!) {
  launchPipelineExecution(executionParams: $params) {
    __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
  }
}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, probe: Callable[[], object], timeout: float, log: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = probe()
        except (OSError, urllib.error.URLError, ValueError, KeyError):
            found = None
        if found:
            return found
        time.sleep(1)
    tail = log.read_text(errors="replace")[-6000:] if log.exists() else ""
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; end of the service log:\n{tail}")


def entries(event: dict) -> dict:
    """A materialization's (or observation's) metadata as plain values."""
    out = {}
    for e in event["metadataEntries"]:
        if "jsonString" in e:
            out[e["label"]] = json.loads(e["jsonString"])
        else:
            out[e["label"]] = next((e[k] for k in ("path", "boolValue", "intValue", "mdStr", "text") if k in e), None)
    return out


class Webhook:
    """A local HTTP endpoint that keeps every JSON body posted to it."""

    def __init__(self):
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/failures"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


class Service:
    def __init__(self, root: Path, webhook_url: str):
        self.root = root
        self.home, self.inbox, self.hooks = root / "dagster_home", root / "inbox", root / "hooks"
        self.storage, self.reports = root / "storage", root / "reports"
        self.log = root / "service.log"
        for folder in (self.home, self.inbox, self.hooks):
            folder.mkdir(parents=True)
        shutil.copy(REPO / "dagster.yaml", self.home / "dagster.yaml")
        self.env = {**os.environ, "DAGSTER_HOME": str(self.home), "CALO_INBOX": str(self.inbox),
                    "CALO_STORAGE": str(self.storage), "CALO_REPORTS": str(self.reports),
                    "CALO_SETTLE_SECONDS": "1", "CALO_FAILURE_WEBHOOK": webhook_url,
                    "CALO_TEST_HOOKS": str(self.hooks), "PYTHONPATH": str(HOOKS)}
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.port = free_port()
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [str(DAGSTER), "dev", "-h", "127.0.0.1", "-p", str(self.port), "-w", str(REPO / "workspace.yaml")],
                cwd=self.root, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for("the code location to load", lambda: len(self.assets()) == len(ASSETS), STARTUP_TIMEOUT, self.log)

    def stop(self) -> None:
        """Stop every process the service started (its own process group), politely first."""
        if self.process is None or self.process.poll() is not None:
            return
        group = os.getpgid(self.process.pid)
        os.killpg(group, signal.SIGINT)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
        self.kill()

    def kill(self) -> None:
        """kill -9 of the whole service: webserver, daemon, code servers, run workers."""
        try:
            os.killpg(os.getpgid(self.process.pid), signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=10)

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/graphql",
                                         data=json.dumps({"query": query, "variables": variables or {}}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            body = json.load(response)
        if body.get("errors"):
            raise ValueError(body["errors"])
        return body["data"]

    def assets(self) -> dict[str, dict]:
        return {"/".join(n["assetKey"]["path"]): n for n in self.graphql(ASSET_QUERY)["assetNodes"]}

    def materializations(self, asset: str) -> list[dict]:
        """Newest first."""
        return sorted(self.assets()[asset]["assetMaterializations"], key=lambda m: -int(m["timestamp"]))

    def reports_made(self) -> list[dict]:
        """The metadata of every report version, newest first."""
        return [entries(m) for m in self.materializations("reports")]

    def runs(self) -> list[dict]:
        """Oldest first, with their tags as a dict."""
        runs = self.graphql(RUNS_QUERY)["runsOrError"]["results"]
        return [{**r, "tags": {t["key"]: t["value"] for t in r["tags"]}} for r in reversed(runs)]

    def materialize_partition(self, asset: str, partition: str) -> str:
        """What the UI's Materialize button does on one partition of an asset; the run id."""
        location = self.graphql(LOCATION_QUERY)["workspaceOrError"]["locationEntries"][0]["name"]
        params = {"selector": {"repositoryLocationName": location, "repositoryName": "__repository__",
                               "pipelineName": "__ASSET_JOB", "assetSelection": [{"path": [asset]}]},
                  "executionMetadata": {"tags": [{"key": "dagster/partition", "value": partition}]}}
        launched = self.graphql(LAUNCH, {"params": params})["launchPipelineExecution"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        return launched["run"]["runId"]

    def move_in(self, folder: Path, name: str) -> None:
        """Put a folder into the inbox at once, as a finished copy would appear."""
        os.rename(folder, self.inbox / name)

    def flag(self, name: str) -> Path:
        return self.hooks / name

    def hooked_pid(self, name: str, timeout: float = DROP_TIMEOUT) -> int:
        """The pid a run stalled by the hook wrote to `name`."""
        path = self.flag(name)
        return int(wait_for(f"a run to stall ({name})", lambda: path.is_file() and path.read_text(), timeout, self.log))


@pytest.fixture(scope="module")
def webhook():
    hook = Webhook()
    yield hook
    hook.server.shutdown()


@pytest.fixture(scope="module")
def service(tmp_path_factory, webhook):
    svc = Service(tmp_path_factory.mktemp("service"), webhook.url)
    try:
        svc.start()
        yield svc
    finally:
        svc.stop()


def cli_summary(inbox: Path) -> dict:
    return json.loads(summary_json(analyze(read_logs(inbox), Settings())))


def figures(summary: dict) -> dict:
    """summary.json less `failures`: the runs that failed on the way are the service's, the figures are the data's."""
    return {k: v for k, v in summary.items() if k != "failures"}


def summary_of(meta: dict) -> dict:
    return json.loads(Path(meta["files"]["summary.json"]["path"]).read_text())


def one_new_log(tmp: Path, name: str, seed: int, prefix: str = "") -> Path:
    """A folder with one log file the service has not seen: the biggest log of a small generated export."""
    generate_export(tmp / f"gen-{name}", transactions=60, seed=seed, faults=False)
    best = max((p for p in (tmp / f"gen-{name}").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = best.read_bytes()
    gzipped = data[:2] == b"\x1f\x8b"
    assert b"Start syncing the balance" in (gzip.decompress(data) if gzipped else data)
    folder = tmp / name
    folder.mkdir()
    shutil.copy2(best, folder / (f"{prefix}000000" + (".gz" if gzipped else "")))
    return folder


@contextmanager
def unwritable(folder: Path):
    """The folder cannot be written, even by root (immutable attribute); as it was afterwards."""
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
            pytest.skip("cannot make a folder unwritable here (chattr +i refused)")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
    else:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)


def leftovers(*folders: Path) -> list[Path]:
    return [p for folder in folders for p in folder.rglob(".*") if ".tmp-" in p.name or ".old-" in p.name]


def test_a_killed_parse_is_retried_and_the_report_equals_the_cli(service: Service, tmp_path: Path, capsys):
    """kill -9 of the run worker in the middle of parsing a large drop: a retry parses it, nobody clicks."""
    staging = tmp_path / "staging"
    staging.mkdir()
    if REAL_LOGS.is_dir():
        shutil.copytree(REAL_LOGS, staging / "export")
    else:
        generate_export(staging / "export", transactions=300, seed=7)
    service.flag("hold-parse").touch()
    started = time.monotonic()
    service.move_in(staging / "export", "export")
    worker = service.hooked_pid("parsing.pid")
    os.kill(worker, signal.SIGKILL)
    killed_at = time.time()
    service.flag("hold-parse").unlink()
    (meta,) = wait_for("the first report", service.reports_made, DROP_TIMEOUT, service.log)
    (drop,) = meta["drops"]
    parse_runs = [r for r in service.runs() if r["tags"].get("dagster/partition") == drop]
    killed, retry = parse_runs
    assert killed["status"] == "FAILURE" and retry["status"] == "SUCCESS" and retry["parentRunId"] == killed["runId"]
    with capsys.disabled():
        print(f"\nkilled parse worker -> retry started: {retry['startTime'] - killed_at:.1f}s; first drop "
              f"({'real logs' if REAL_LOGS.is_dir() else 'generated export'}) end to end, kill included: "
              f"{time.monotonic() - started:.1f}s", flush=True)

    nodes = service.assets()
    assert {name for name, node in nodes.items() if node["assetMaterializations"]} == ASSETS
    for name, node in nodes.items():
        for check in node["assetChecksOrError"].get("checks", []):
            execution = check["executionForLatestMaterialization"]
            assert execution is not None, f"{name}.{check['name']} did not run"
            if check["blocking"]:
                assert check["name"] in BLOCKING and execution["status"] == "SUCCEEDED", (name, check)
            elif check["name"] == "all_drops_parsed":
                assert execution["status"] == "SUCCEEDED", check
            else:
                assert execution["evaluation"]["severity"] == "WARN", (name, check)
    assert [m["partition"] for m in service.materializations("parsed_drop")] == [drop]  # parsed once in effect

    assert set(meta) == REPORT_METADATA
    assert meta["checks_passed"] is True and meta["complete"] is True and meta["missing_drops"] == []
    summary = summary_of(meta)
    assert figures(summary) == figures(cli_summary(service.inbox))  # what the CLI says of the same folder
    (failure,) = summary["failures"]
    assert failure["run_id"] == killed["runId"] and failure["drop"] == drop and failure["step"] == "parsed_drop"
    assert "signal 9" in failure["error"] and meta["failures"] == summary["failures"]
    assert not leftovers(service.storage, service.reports)


def test_an_unwritable_reports_folder_fails_visibly_then_catches_up(service: Service, tmp_path: Path, webhook, capsys):
    """One more file while the reports folder cannot be written: the rebuild fails where ops look; once the
    folder is writable again, a retry brings latest/ up to date without any new drop."""
    (first,) = service.reports_made()
    (first_drop,) = first["drops"]
    first_files = {name: entry["sha256"] for name, entry in first["files"].items()}
    before = {r["runId"] for r in service.runs()}
    with unwritable(service.reports):
        service.move_in(one_new_log(tmp_path, "late", seed=11), "late")
        failed = wait_for("a rebuild to fail", lambda: [r for r in service.runs() if r["runId"] not in before
                                                       and r["jobName"] == "__ASSET_JOB" and r["status"] == "FAILURE"],
                          DROP_TIMEOUT, service.log)[0]
    unlocked = time.monotonic()
    newest = wait_for("the report to catch up", lambda: (m := service.reports_made()) and len(m) == 2 and m[0],
                      DROP_TIMEOUT, service.log)
    with capsys.disabled():
        print(f"reports folder writable again -> report caught up: {time.monotonic() - unlocked:.1f}s", flush=True)
    second_drop = newest["drops"][-1]
    assert newest["drops"] == [first_drop, second_drop] and second_drop != first_drop
    assert newest["complete"] is True
    failure = next(f for f in newest["failures"] if f["run_id"] == failed["runId"])
    assert failure["step"] == "reports" and failure["error"].startswith("PermissionError") and failure["drop"] is None
    wait_for("the failure at the webhook", lambda: any(f["run_id"] == failed["runId"] for f in webhook.received),
             60, service.log)
    observed = [entries(o) for o in service.assets()["reports"]["assetObservations"]]
    assert any(o["step"] == "reports" and o["error"].startswith("PermissionError") for o in observed)

    latest = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (service.reports / "latest").iterdir()}
    assert latest == {name: entry["sha256"] for name, entry in newest["files"].items()}
    summary = summary_of(newest)
    assert figures(summary) == figures(cli_summary(service.inbox))
    parsed = [m for m in service.materializations("parsed_drop") if m["partition"] == second_drop]
    assert len(parsed) == 1 and entries(parsed[0])["row_counts"]["files"] == 1  # only the new file was parsed
    first_folder = Path(first["folder"])
    for name, digest in first_files.items():  # the first version is untouched
        assert hashlib.sha256((first_folder / name).read_bytes()).hexdigest() == digest
    assert not leftovers(service.storage, service.reports)


def test_a_drop_that_always_fails_makes_the_report_incomplete(service: Service, tmp_path: Path, webhook):
    """Its parse raises on every attempt: the report goes out marked incomplete, and the check fails."""
    service.flag("fail-parse").touch()
    made = len(service.reports_made())
    service.move_in(one_new_log(tmp_path, "bad", seed=12, prefix="parse-fails-"), "bad")
    newest = wait_for("an incomplete report", lambda: (m := service.reports_made()) and len(m) > made and m[0],
                      DROP_TIMEOUT, service.log)
    assert newest["complete"] is False
    (missing,) = newest["missing_drops"]
    drop = missing["drop"]
    (bad_file,) = (service.inbox / "bad").iterdir()
    assert missing["files"] == [bad_file.relative_to(service.inbox).as_posix()]
    assert "parsed_drop" in missing["reason"] and "test hook: the parser raises" in missing["reason"]
    assert drop not in newest["drops"]
    summary = summary_of(newest)
    assert summary["complete"] is False and summary["missing_drops"] == newest["missing_drops"]
    assert json.loads((service.reports / "latest" / "summary.json").read_text()) == summary
    (failure,) = [f for f in summary["failures"] if f["drop"] == drop]  # one run: its step was tried 3 times in it
    assert failure["step"] == "parsed_drop" and "test hook" in failure["error"]
    wait_for("the failure at the webhook", lambda: any(f["drop"] == drop for f in webhook.received), 60, service.log)

    node = service.assets()["parsed_events"]
    (check,) = [c for c in node["assetChecksOrError"]["checks"] if c["name"] == "all_drops_parsed"]
    assert not check["blocking"] and check["executionForLatestMaterialization"]["status"] == "FAILED"
    assert check["executionForLatestMaterialization"]["evaluation"]["severity"] == "ERROR"
    observations = service.assets()["parsed_drop"]["assetObservations"]
    assert any(o["partition"] == drop and "test hook" in o["description"] for o in observations)


def test_after_a_killed_service_the_queue_moves_and_the_rematerialized_drop_completes_the_report(
        service: Service, capsys):
    """The failed drop is re-materialized from the UI; the whole service is killed while its report is being
    written, and started again on the same folders: the stale run is failed, retried, and the report is complete."""
    (incomplete,) = service.reports_made()[0]["missing_drops"]
    service.flag("fail-parse").unlink()
    service.flag("hold-reports").touch()
    made = len(service.reports_made())
    service.materialize_partition("parsed_drop", incomplete["drop"])  # Assets > parsed_drop > Partitions > Materialize
    service.hooked_pid("reporting.pid")
    assert leftovers(service.reports)  # the report was being written into its temporary folder
    (stale,) = [r for r in service.runs() if r["status"] == "STARTED"]
    service.kill()
    service.flag("hold-reports").unlink()
    service.flag("reporting.pid").unlink()

    restarted = time.monotonic()
    service.start()
    failed = wait_for("monitoring to fail the stale run",
                      lambda: next(r for r in service.runs() if r["runId"] == stale["runId"])["status"] == "FAILURE",
                      DROP_TIMEOUT, service.log)
    assert failed
    stale_failed = time.monotonic() - restarted
    retry = wait_for("the stale run's retry to start", lambda: next(
        (r for r in service.runs() if r["parentRunId"] == stale["runId"] and r["startTime"]), None), DROP_TIMEOUT,
        service.log)
    queue_moved = time.monotonic() - restarted
    newest = wait_for("the complete report", lambda: (m := service.reports_made()) and len(m) > made and m[0],
                      DROP_TIMEOUT, service.log)
    with capsys.disabled():
        print(f"service restarted -> stale run failed: {stale_failed:.1f}s, queue moved (retry started): "
              f"{queue_moved:.1f}s, report complete: {time.monotonic() - restarted:.1f}s", flush=True)
    assert retry["status"] in ("STARTED", "SUCCESS")
    assert newest["complete"] is True and newest["missing_drops"] == [] and incomplete["drop"] in newest["drops"]
    summary = summary_of(newest)
    assert figures(summary) == figures(cli_summary(service.inbox))
    failure = next(f for f in summary["failures"] if f["run_id"] == stale["runId"])
    assert failure["step"] == "reports" and "no longer running" in failure["error"]
    assert not leftovers(service.storage, service.reports)
