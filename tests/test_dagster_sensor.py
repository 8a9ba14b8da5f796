"""The drop sensor, tick by tick, on a temporary inbox (no daemon: `dg.build_sensor_context`)."""

import json
import os
import time
from pathlib import Path

import dagster as dg
import pytest

from calo_assets.defs import resources as resources_module
from calo_assets.defs.resources import InboxFolder, drop_key
from calo_assets.defs.sensors import log_drop_sensor, plan_tick

OLD = time.time_ns() - 3600 * 10**9  # an mtime an hour ago: settled as far as age goes


class Ticker:
    """Runs the sensor tick after tick, carrying the cursor like the daemon does."""

    def __init__(self, inbox: Path, settle_seconds: float = 0):
        self.inbox = InboxFolder(path=str(inbox), settle_seconds=settle_seconds)
        self.instance = dg.DagsterInstance.ephemeral()
        self.cursor: str | None = None

    def tick(self) -> tuple[list[dg.RunRequest], str]:
        context = dg.build_sensor_context(instance=self.instance, cursor=self.cursor,
                                          resources={"inbox": self.inbox})
        result = log_drop_sensor(context)
        if isinstance(result, dg.SkipReason):
            return [], result.skip_message or ""
        if result.cursor is not None:
            self.cursor = result.cursor
        if result.run_requests:
            # the daemon adds the partitions the sensor asks for; so does this test
            for request in result.dynamic_partitions_requests:
                self.instance.add_dynamic_partitions(request.partitions_def_name, request.partition_keys)
            added = [r.partition_keys for r in result.dynamic_partitions_requests]
            assert added == [[result.run_requests[0].partition_key]]
        return list(result.run_requests or []), (result.skip_reason.skip_message if result.skip_reason else "")


def put(path: Path, data: bytes, mtime_ns: int = OLD) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def files_of(request: dg.RunRequest) -> list[dict]:
    return request.run_config["ops"]["raw_log_drops"]["config"]["files"]


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    folder = tmp_path / "inbox"
    folder.mkdir()
    return folder


def test_a_new_file_waits_one_tick_then_starts_one_run(inbox):
    ticker = Ticker(inbox)
    put(inbox / "export/a.log", b"2024-01-10T08:00:00.000Z START RequestId: r1\n")
    requests, reason = ticker.tick()
    assert requests == [] and "not settled yet" in reason
    requests, _ = ticker.tick()
    assert len(requests) == 1
    request = requests[0]
    assert request.run_key == request.partition_key  # content-derived: dedupes forever, correctly
    assert request.job_name in (None, "ingest_drop")
    (entry,) = files_of(request)
    assert entry["path"] == "export/a.log" and entry["size"] == (inbox / "export/a.log").stat().st_size
    assert request.partition_key == drop_key([("export/a.log", entry["sha256"])])
    assert ticker.instance.get_dynamic_partitions("drops") == [request.partition_key]
    assert ticker.tick()[0] == []  # nothing new afterwards


def test_a_growing_file_is_not_taken_until_it_stops(inbox):
    ticker = Ticker(inbox)
    path = put(inbox / "a.log", b"line 1\n")
    assert ticker.tick()[0] == []
    put(path, b"line 1\nline 2\n", OLD + 10**9)  # grew since the previous tick
    assert ticker.tick()[0] == []
    requests, _ = ticker.tick()  # unchanged since the previous tick: settled
    assert [f["size"] for f in files_of(requests[0])] == [len(b"line 1\nline 2\n")]


def test_a_recently_modified_file_waits_for_the_settle_time(inbox):
    ticker = Ticker(inbox, settle_seconds=3600)
    put(inbox / "a.log", b"fresh\n", time.time_ns())
    assert ticker.tick()[0] == []
    requests, reason = ticker.tick()  # unchanged, but modified less than settle_seconds ago
    assert requests == [] and "not settled yet" in reason


def test_several_settled_files_make_one_drop(inbox):
    ticker = Ticker(inbox)
    for name in ("x/1.log", "x/2.log", "y/3.gz"):
        put(inbox / name, name.encode() * 10)
    ticker.tick()
    requests, _ = ticker.tick()
    assert len(requests) == 1
    assert sorted(f["path"] for f in files_of(requests[0])) == ["x/1.log", "x/2.log", "y/3.gz"]


def test_the_same_content_under_another_name_starts_nothing(inbox):
    ticker = Ticker(inbox)
    put(inbox / "a.log", b"the same bytes\n")
    ticker.tick()
    (first,) = ticker.tick()[0]
    put(inbox / "copy/of-a.log", b"the same bytes\n")
    assert ticker.tick()[0] == []
    requests, reason = ticker.tick()
    assert requests == []
    assert "duplicate drop" in reason and "copy/of-a.log" in reason and first.partition_key in reason
    assert ticker.tick()[0] == []  # and it stays handled


def test_changed_content_under_the_same_name_is_a_new_drop(inbox):
    ticker = Ticker(inbox)
    path = put(inbox / "a.log", b"version 1\n")
    ticker.tick()
    (first,) = ticker.tick()[0]
    put(path, b"version 2, longer\n", OLD + 5 * 10**9)
    assert ticker.tick()[0] == []
    (second,) = ticker.tick()[0]
    assert second.partition_key != first.partition_key
    assert files_of(second)[0]["sha256"] != files_of(first)[0]["sha256"]


def test_junk_and_empty_files_start_nothing(inbox):
    ticker = Ticker(inbox)
    put(inbox / ".DS_Store", b"\x00\x00\x00\x01Bud1")
    put(inbox / "__MACOSX/._x", b"\x00\x05\x16\x07")
    put(inbox / "export/empty.log", b"")
    for _ in range(3):
        requests, reason = ticker.tick()
        assert requests == [] and "no new log files" in reason


def test_junk_and_duplicates_ride_along_with_a_real_drop(inbox):
    """So the drop's file list (and the report) shows them skipped or duplicate, as the CLI does."""
    ticker = Ticker(inbox)
    put(inbox / "__MACOSX/._x", b"\x00\x05\x16\x07")
    put(inbox / "a.log", b"content\n")
    put(inbox / "b.log", b"content\n")
    ticker.tick()
    (request,) = ticker.tick()[0]
    by_path = {f["path"]: f for f in files_of(request)}
    assert by_path["__MACOSX/._x"]["skip"].startswith("macOS resource fork")
    assert by_path["b.log"]["duplicate_of"] == "a.log" and by_path["a.log"]["duplicate_of"] == ""
    put(inbox / "c.log", b"more\n")
    ticker.tick()
    (later,) = ticker.tick()[0]
    assert [f["path"] for f in files_of(later)] == ["c.log"]  # the junk was listed once, with the first drop


def test_the_partition_key_depends_on_content_only(inbox, tmp_path):
    put(inbox / "a.log", b"alpha\n")
    put(inbox / "b.log", b"beta\n")
    keys = []
    for mtime in (OLD, OLD - 10**12):  # same names and bytes, other mtimes, a fresh cursor each time
        for name in ("a.log", "b.log"):
            os.utime(inbox / name, ns=(mtime, mtime))
        ticker = Ticker(inbox)
        ticker.tick()
        keys.append(ticker.tick()[0][0].partition_key)
    assert keys[0] == keys[1] and len(keys[0]) == 16


def test_only_settled_new_files_are_read(inbox, monkeypatch):
    read: list[str] = []
    real = resources_module.file_sha256
    monkeypatch.setattr(resources_module, "file_sha256", lambda path: read.append(Path(path).name) or real(path))
    ticker = Ticker(inbox)
    for i in range(20):
        put(inbox / f"f{i:02d}.log", f"file {i}\n".encode())
    ticker.tick()
    assert read == []  # first sight: stat only
    ticker.tick()
    assert len(read) == 20  # settled: each read once to fingerprint it
    read.clear()
    put(inbox / "new.log", b"new\n")
    ticker.tick()
    ticker.tick()
    assert read == ["new.log"]  # known files are never read again


def test_the_cursor_is_json_of_sizes_mtimes_and_fingerprints(inbox):
    ticker = Ticker(inbox)
    path = put(inbox / "a.log", b"abc\n")
    ticker.tick()
    ticker.tick()
    state = json.loads(ticker.cursor)
    size, mtime_ns, sha = state["files"]["a.log"]
    assert (size, mtime_ns) == (path.stat().st_size, path.stat().st_mtime_ns)
    assert state["submitted"] == {sha: drop_key([("a.log", sha)])}


def test_a_file_that_vanishes_before_hashing_is_forgotten():
    entry = resources_module.InboxEntry("gone.log", 5, OLD, None)
    state = {"files": {"gone.log": [5, OLD, ""]}, "submitted": {}}

    def missing(_: str) -> str:
        raise FileNotFoundError("gone.log")

    plan = plan_tick([entry], state, time.time_ns(), 0, missing)
    assert plan.drop is None and plan.vanished == ["gone.log"] and "gone.log" not in plan.state["files"]
