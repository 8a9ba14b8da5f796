"""The service's run launcher: Dagster's default one, plus a health check of each run's worker process.

`DefaultRunLauncher` starts each run in a process on this machine but cannot tell
run monitoring whether that process is still alive, so a run whose worker died
with the whole service (kill -9, power loss) stays STARTED forever and, with one
run slot, blocks every later run. Here the worker is found by the pid its run
recorded when it started (the RUN_START event); run monitoring (`dagster.yaml`)
asks every `poll_interval_seconds` and fails the run when that process is gone,
after which the run-retry daemon launches it again.
"""

from __future__ import annotations

import os
from pathlib import Path

from dagster import DagsterEventType, DagsterRun, DefaultRunLauncher
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus

#: Seconds of slack when comparing a process's start with its run's start (/proc/stat's boot time is in seconds).
CLOCK_SLACK = 2.0


class LocalProcessRunLauncher(DefaultRunLauncher):
    """A process per run on this machine (as `DefaultRunLauncher`), whose liveness run monitoring can check."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        started = self._instance.all_logs(run.run_id, of_type=DagsterEventType.RUN_START)
        event = started[-1].dagster_event if started else None
        if event is None or not event.pid:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "no worker pid recorded yet")
        if worker_alive(event.pid, started[-1].timestamp):
            return CheckRunHealthResult(WorkerStatus.RUNNING)
        return CheckRunHealthResult(WorkerStatus.FAILED, f"the run worker (pid {event.pid}) is no longer running")


def worker_alive(pid: int, run_started: float) -> bool:
    """Whether process `pid` runs and is the one that was running at `run_started` (not a reused pid)."""
    if os.name == "nt":
        return True  # no cheap and safe check there; the service runs on Linux
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, as another user
    started = process_start(pid)
    return started is None or started <= run_started + CLOCK_SLACK


def process_start(pid: int) -> float | None:
    """When process `pid` started (epoch seconds), from /proc; None where there is no /proc. Zombies count as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
    except (OSError, StopIteration, ValueError):
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (name) "; the name may hold spaces
    if fields[0] == "Z":
        return float("inf")
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
