"""The downloads app under load: 50 clients download the latest workbook while new versions are being written.

The real app (uvicorn, as `calo-downloads serve` runs it) over a real instance; the versions are made by
materializing the assets in this process, as the service does, while the clients keep downloading. Every
answer must be a whole workbook of one recorded version (its size and sha256 are a version's). Requests per
second and latency percentiles are printed, not asserted: they depend on the machine.
"""

from __future__ import annotations

import hashlib
import threading
import time

import httpx2
import pytest

from logbuilder import tx
from test_downloads import Pipeline, Server, add_users, recorded_files, server_env, signed_in

pytestmark = pytest.mark.slow

CLIENTS = 50
NEW_VERSIONS = 3
USERS_PER_DROP = 150


def a_drop(pipeline: Pipeline, day: int) -> None:
    """A drop with one debit per user, so the workbook has a few hundred rows."""
    pipeline.drop(f"2024-01-{day:02d}-[$LATEST]load/000000.gz",
                  [tx(user=f"user-{day}-{i:04d}", currency=("BHD", "SAR", "KWD")[i % 3], amount="1.5", old="20",
                      new="18.5") for i in range(USERS_PER_DROP)])


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def test_fifty_clients_get_whole_workbooks_of_one_version_while_new_ones_are_written(tmp_path, capsys):
    pipeline = Pipeline(tmp_path / "pipeline")
    a_drop(pipeline, 10)
    pipeline.report()
    add_users(pipeline.home)
    server = Server(server_env(pipeline.home), tmp_path / "server.log")
    answers: list[tuple[float, int, str, int]] = []  # latency, status, sha256, size
    stop = threading.Event()
    lock = threading.Lock()
    browsers: list[httpx2.Client] = []

    def client(browser: httpx2.Client) -> None:
        while not stop.is_set():
            began = time.perf_counter()
            answer = browser.get("/latest/report.xlsx")
            took = time.perf_counter() - began
            with lock:
                answers.append((took, answer.status_code, hashlib.sha256(answer.content).hexdigest(),
                                len(answer.content)))

    try:
        browsers += [signed_in(httpx2.Client(base_url=server.base, timeout=120), "alice") for _ in range(CLIENTS)]
        threads = [threading.Thread(target=client, args=(b,), daemon=True) for b in browsers]
        began = time.perf_counter()
        for thread in threads:
            thread.start()
        for day in range(11, 11 + NEW_VERSIONS):
            a_drop(pipeline, day)
            pipeline.report()  # the new version is written while the clients download the previous one
        time.sleep(2)
        stop.set()
        for thread in threads:
            thread.join(timeout=180)
        elapsed = time.perf_counter() - began
    finally:
        stop.set()
        server.stop()
        for browser in browsers:
            browser.close()

    versions = {recorded_files(r)["report.xlsx"]["sha256"]: recorded_files(r)["report.xlsx"]["size"]
                for r in pipeline.versions}
    assert len(versions) == 1 + NEW_VERSIONS
    assert [a for a in answers if a[1] != 200] == []
    assert all(sha in versions and size == versions[sha] for _, _, sha, size in answers)  # whole, one version each
    served = {sha for _, _, sha, _ in answers}
    assert len(served) >= 2  # the clients went on across new versions
    latencies = [a[0] for a in answers]
    with capsys.disabled():
        print(f"\ndownloads under load: {CLIENTS} clients, {len(answers)} workbooks "
              f"({sum(a[3] for a in answers) / len(answers) / 1024:.0f} KB each) in {elapsed:.1f}s while "
              f"{NEW_VERSIONS} versions were written: {len(answers) / elapsed:.0f} req/s, "
              f"p50 {percentile(latencies, 0.5) * 1000:.0f} ms, p95 {percentile(latencies, 0.95) * 1000:.0f} ms, "
              f"max {max(latencies) * 1000:.0f} ms; {len(served)} versions served", flush=True)
