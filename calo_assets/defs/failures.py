"""Failed runs, described the way ops read them: job, drop, step, the error's first line, time.

One description serves every place a failure is shown: the run-failure sensor
(an observation on each asset the run did not build, and the webhook), and the
`failures` of the next report (summary.json, the workbook, the dashboard, the
downloads page), which lists the runs that failed since the previous report.
"""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg

DROP_TAG = "dagster/partition"
#: What Dagster says when a run was failed from outside (a dead worker); the engine event before it says more.
OUTSIDE_FAILURE = "This run has been marked as failed from outside the execution context."
#: At most this many failures go into one report: the newest ones.
MAX_LISTED = 50
EVENTS = {dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE,
          dg.DagsterEventType.STEP_SKIPPED, dg.DagsterEventType.RUN_FAILURE, dg.DagsterEventType.ENGINE_EVENT,
          dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED, dg.DagsterEventType.ASSET_MATERIALIZATION}


def iso_utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def first_line(text: str | None) -> str:
    return next((line.strip() for line in (text or "").splitlines() if line.strip()), "")


#: Dagster's wrappers around the exception a step raised ("Error occurred while executing ...",
#: "Exceeded max_retries of 2"): the error reported is the one they wrap.
WRAPPERS = {"DagsterExecutionStepExecutionError", "RetryRequestedFromPolicy"}


def _step_error(event: dg.DagsterEvent) -> str:
    error = event.step_failure_data.error if event.step_failure_data else None
    while error is not None and error.cls_name in WRAPPERS and error.cause:
        error = error.cause
    return first_line(error.message if error else event.message)


class FailedRun:
    """What a failed run did and did not do, read back from its event log."""

    def __init__(self, instance: dg.DagsterInstance, run: dg.DagsterRun):
        self.run = run
        entries = instance.all_logs(run.run_id, of_type=EVENTS)  # in the order they were stored
        events = [(e, e.dagster_event) for e in entries if e.dagster_event]
        running: dict[str, None] = {}
        failed_steps, planned, built = [], set(), set()
        self.error, self.time, last_engine = "", None, ""
        for entry, event in events:
            kind = event.event_type
            if kind == dg.DagsterEventType.STEP_START:
                running[event.step_key] = None
            elif kind in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_SKIPPED):
                running.pop(event.step_key, None)
            elif kind == dg.DagsterEventType.STEP_FAILURE:
                running.pop(event.step_key, None)
                failed_steps.append((event.step_key, _step_error(event)))
            elif kind == dg.DagsterEventType.ENGINE_EVENT:
                last_engine = event.message or last_engine
            elif kind == dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED:
                planned.add((event.asset_key, event.partition))
            elif kind == dg.DagsterEventType.ASSET_MATERIALIZATION:
                built.add((event.asset_key, event.partition))
            elif kind == dg.DagsterEventType.RUN_FAILURE:
                self.time = entry.timestamp
                message = first_line(event.message)
                self.error = first_line(last_engine) if message == first_line(OUTSIDE_FAILURE) else message
        if failed_steps:
            self.step, self.error = failed_steps[0]
        else:  # the worker died, or the run was failed from outside: the step it was in, if any
            self.step = next(reversed(running), None)
        if self.time is None:
            self.time = entries[-1].timestamp if entries else datetime.now(UTC).timestamp()
        #: (asset key, partition) the run was to materialize and did not
        self.unbuilt = sorted(planned - built, key=lambda k: (k[0].to_user_string(), k[1] or ""))

    def record(self) -> dict:
        """The failure as listed in summary.json's `failures` (and sent to the webhook)."""
        return {"run_id": self.run.run_id, "job": self.run.job_name, "drop": self.run.tags.get(DROP_TAG),
                "step": self.step, "error": self.error or f"run ended {self.run.status.value}",
                "time": iso_utc(self.time)}


def failures_since(instance: dg.DagsterInstance, after: float | None, exclude: str = "") -> list[dict]:
    """The runs that failed after `after` (epoch seconds; None: ever), oldest first, at most MAX_LISTED."""
    since = datetime.fromtimestamp(after, UTC) if after is not None else None
    records = instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE], updated_after=since),
                                       limit=MAX_LISTED)
    failed = [FailedRun(instance, r.dagster_run).record() for r in records
              if r.dagster_run.run_id != exclude and (after is None or (r.end_time or 0) > after)]
    return sorted(failed, key=lambda f: (f["time"], f["run_id"]))
