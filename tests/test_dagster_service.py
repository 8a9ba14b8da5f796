"""End to end: the real service (`dagster dev`: webserver, daemon, code server) on temporary folders.

Driven the way a person uses it: log files are moved into the inbox, and what the
service made is read back through its GraphQL API and from the report folder.
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
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from calo_assets.analysis import analyze
from calo_assets.reading import read_logs
from calo_assets.generator import generate_export
from calo_assets.outputs import summary_json
from calo_assets.settings import Settings

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
REAL_LOGS = Path(__file__).resolve().parents[1].parent / "shared" / "real-logs"
DAGSTER = Path(sys.executable).with_name("dagster")
ASSETS = {"raw_log_drops", "parsed_drop", "parsed_events", "sync_errors", "ledger", "anomalies", "reports"}
BLOCKING = {"transactions_schema", "rejects_schema", "ledger_schema", "reconciliation", "anomalies_schema"}
STARTUP_TIMEOUT = 180
DROP_TIMEOUT = 420

ASSET_QUERY = """
query {
  assetNodes {
    assetKey { path }
    assetMaterializations(limit: 50) {
      runId partition timestamp
      metadataEntries {
        label
        ... on JsonMetadataEntry { jsonString }
        ... on PathMetadataEntry { path }
        ... on BoolMetadataEntry { boolValue }
        ... on IntMetadataEntry { intValue }
        ... on MarkdownMetadataEntry { mdStr }
      }
    }
    assetChecksOrError {
      ... on AssetChecks {
        checks { name blocking executionForLatestMaterialization { status evaluation { success severity } } }
      }
    }
  }
}
"""
RUNS_QUERY = """
query {
  runsOrError(filter: {pipelineName: "ingest_drop"}) { ... on Runs { results { runId status tags { key value } } } }
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
        time.sleep(2)
    tail = log.read_text(errors="replace")[-6000:] if log.exists() else ""
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; end of the service log:\n{tail}")


def entries(materialization: dict) -> dict:
    """A materialization's metadata as plain values."""
    out = {}
    for e in materialization["metadataEntries"]:
        if "jsonString" in e:
            out[e["label"]] = json.loads(e["jsonString"])
        else:
            out[e["label"]] = next((e[k] for k in ("path", "boolValue", "intValue", "mdStr") if k in e), None)
    return out


class Service:
    def __init__(self, root: Path):
        self.root = root
        self.port = free_port()
        self.home, self.inbox = root / "dagster_home", root / "inbox"
        self.storage, self.reports = root / "storage", root / "reports"
        self.log = root / "service.log"
        for folder in (self.home, self.inbox):
            folder.mkdir(parents=True)
        shutil.copy(REPO / "dagster.yaml", self.home / "dagster.yaml")
        self.env = {**os.environ, "DAGSTER_HOME": str(self.home), "CALO_INBOX": str(self.inbox),
                    "CALO_STORAGE": str(self.storage), "CALO_REPORTS": str(self.reports),
                    "CALO_SETTLE_SECONDS": "1"}
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "wb") as out:
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
        try:
            os.killpg(group, signal.SIGKILL)  # whatever is left of the group (code servers, run workers)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=10)

    def graphql(self, query: str) -> dict:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/graphql",
                                         data=json.dumps({"query": query}).encode(),
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

    def move_in(self, folder: Path, name: str) -> None:
        """Put a folder into the inbox at once, as a finished copy would appear."""
        os.rename(folder, self.inbox / name)


@pytest.fixture
def service(tmp_path: Path):
    svc = Service(tmp_path)
    try:
        svc.start()
        yield svc
    finally:
        svc.stop()


def cli_summary(inbox: Path) -> dict:
    return json.loads(summary_json(analyze(read_logs(inbox), Settings())))


def one_new_log(tmp: Path) -> Path:
    """A folder with one log file the service has not seen: the biggest log of a small generated export."""
    generate_export(tmp / "extra", transactions=60, seed=11, faults=False)
    best = max((p for p in (tmp / "extra").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = best.read_bytes()
    gzipped = data[:2] == b"\x1f\x8b"
    assert b"Start syncing the balance" in (gzip.decompress(data) if gzipped else data)
    folder = tmp / "late"
    folder.mkdir()
    shutil.copy2(best, folder / ("000000.gz" if gzipped else "000000"))
    return folder


def test_the_service_turns_drops_into_reports(service: Service, tmp_path: Path, capsys):
    staging = tmp_path / "staging"
    staging.mkdir()
    if REAL_LOGS.is_dir():
        shutil.copytree(REAL_LOGS, staging / "export")
    else:
        generate_export(staging / "export", transactions=300, seed=7)

    started = time.monotonic()
    service.move_in(staging / "export", "export")
    wait_for("the first report", lambda: service.materializations("reports"), DROP_TIMEOUT, service.log)
    first_drop_seconds = time.monotonic() - started
    with capsys.disabled():
        print(f"\nfirst drop ({'real logs' if REAL_LOGS.is_dir() else 'generated export'}) end to end: "
              f"{first_drop_seconds:.1f}s", flush=True)

    nodes = service.assets()
    assert {name for name, node in nodes.items() if node["assetMaterializations"]} == ASSETS
    for name, node in nodes.items():
        for check in node["assetChecksOrError"].get("checks", []):
            execution = check["executionForLatestMaterialization"]
            assert execution is not None, f"{name}.{check['name']} did not run"
            if check["blocking"]:
                assert check["name"] in BLOCKING and execution["status"] == "SUCCEEDED", (name, check)
            else:
                assert execution["evaluation"]["severity"] == "WARN", (name, check)

    (report,) = service.materializations("reports")
    meta = entries(report)
    assert set(meta) == {"folder", "files", "drops", "checks_passed", "currency_totals", "summary"}
    assert meta["checks_passed"] is True and len(meta["drops"]) == 1
    first_folder = Path(meta["folder"])
    summary = json.loads(Path(meta["files"]["summary.json"]["path"]).read_text())
    assert summary == cli_summary(service.inbox)  # what the CLI says of the same folder
    first_files = {name: entry["sha256"] for name, entry in meta["files"].items()}
    (first_drop,) = meta["drops"]

    # one more file: only its drop is parsed, then the ledger and the report are rebuilt
    service.move_in(one_new_log(tmp_path), "late")
    started = time.monotonic()
    wait_for("the second report", lambda: len(service.materializations("reports")) == 2, DROP_TIMEOUT, service.log)
    with capsys.disabled():
        print(f"one more file end to end: {time.monotonic() - started:.1f}s", flush=True)
    newest = entries(service.materializations("reports")[0])
    second_drop = newest["drops"][-1]
    assert newest["drops"] == [first_drop, second_drop] and second_drop != first_drop

    parsed = service.materializations("parsed_drop")
    assert sorted(m["partition"] for m in parsed) == sorted([first_drop, second_drop])  # the first was parsed once
    new_parse = next(m for m in parsed if m["partition"] == second_drop)
    assert entries(new_parse)["row_counts"]["files"] == 1
    (new_raw,) = [m for m in service.materializations("raw_log_drops") if m["partition"] == second_drop]
    assert entries(new_raw)["file_count"] == 1 and "late/000000" in entries(new_raw)["files"]  # markdown table
    ledger, report = service.materializations("ledger")[0], service.materializations("reports")[0]
    assert int(new_parse["timestamp"]) < int(ledger["timestamp"]) < int(report["timestamp"])

    runs = service.graphql(RUNS_QUERY)["runsOrError"]["results"]
    assert sorted(next(t["value"] for t in r["tags"] if t["key"] == "dagster/partition") for r in runs) == \
           sorted([first_drop, second_drop])

    summary = json.loads(Path(newest["files"]["summary.json"]["path"]).read_text())
    assert summary == cli_summary(service.inbox)
    assert Path(newest["folder"]) != first_folder  # a new version folder; the first one is untouched
    for name, digest in first_files.items():
        assert hashlib.sha256((first_folder / name).read_bytes()).hexdigest() == digest
