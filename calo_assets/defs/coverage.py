"""Which drops a report covers: parsed, still being tried, or given up (and why).

A drop is *pending* while its parse run is queued or running, and also between a
failed attempt and the retry Dagster will launch for it (the run-retry daemon
takes a few seconds): `parsed_events`, and so the report, waits for it. It is
*given up* once its latest attempt failed (or was canceled) with no retry left:
the report then goes out marked incomplete, naming the drop, its files and the
reason, and the `all_drops_parsed` check fails. Re-materializing the drop's
partition makes it pending again, and a success makes the next report complete.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import dagster as dg

from calo_assets.defs.failures import FailedRun
from calo_assets.defs.resources import StorageFolder

PARSED_DROP = dg.AssetKey("parsed_drop")
PARSED_EVENTS = dg.AssetKey("parsed_events")
DROPS = "drops"  # the dynamic partitions of the drops
PENDING_REASON = "still being parsed or waiting for a retry"
TABLES_GONE_REASON = "parsed, but its stored tables are gone: re-materialize it"
WILL_RETRY_TAG = "dagster/will_retry"
#: Seconds after a failure that a retry Dagster promised (or has yet to decide on) is waited for.
RETRY_LAUNCH_GRACE = 600


def _given_up_reason(instance: dg.DagsterInstance, run_id: str) -> str | None:
    """Why a drop whose latest parse attempt was run `run_id` is given up; None while it is still pending."""
    record = instance.get_run_record_by_id(run_id)
    if record is None:
        return f"its parse run {run_id[:8]} was deleted"
    run = record.dagster_run
    if not run.is_finished:
        return None
    if run.status == dg.DagsterRunStatus.FAILURE and instance.run_retries_enabled:
        ended = record.end_time or record.update_timestamp.timestamp()
        if run.tags.get(WILL_RETRY_TAG) != "false" and time.time() - ended < RETRY_LAUNCH_GRACE:
            return None  # a retry is coming (the tag is set just after the failure is recorded)
    if run.status == dg.DagsterRunStatus.FAILURE:
        failure = FailedRun(instance, run).record()
        return f"parse run {run_id[:8]} failed" + (f" in {failure['step']}" if failure["step"] else "") + \
            f": {failure['error']}"
    return f"parse run {run_id[:8]} ended {run.status.value} without storing the drop"


def drop_states(instance: dg.DagsterInstance, keys: Iterable[str]) -> dict[str, str | None]:
    """For each drop never parsed: None while it is pending, else why it was given up."""
    attempts = instance.event_log_storage.get_latest_asset_partition_materialization_attempts_without_materializations(
        PARSED_DROP)
    return {key: _given_up_reason(instance, attempts[key][0]) if key in attempts else None for key in keys}


class DropGivenUp(dg.AutomationCondition):
    """True for the drops whose parse failed for good (see `drop_states`); evaluated on the user code server."""

    @property
    def name(self) -> str:
        return "drop_given_up"

    def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        keys = context.candidate_subset.expensively_compute_partition_keys()
        states = drop_states(context.asset_graph_view.instance, keys)
        given_up = {key for key, reason in states.items() if reason is not None}
        return dg.AutomationResult(context, context.candidate_subset.compute_intersection_with_partition_keys(given_up))


class CoverageNews(dg.AutomationCondition):
    """True when a drop is parsed, or given up, and the latest `parsed_events` does not say so yet.

    A state, not an event of the tick: a drop parsed in the same tick as a rebuild's
    own materializations (which resets a tick-based trigger such as `eager()`) is
    still seen at the next tick. A rebuild that failed since the news is not asked
    again here (run retries take it up), so a failing rebuild does not loop.
    """

    @property
    def name(self) -> str:
        return "coverage_news"

    def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        news = coverage_news(context.asset_graph_view.instance)
        return dg.AutomationResult(context, context.candidate_subset if news else context.get_empty_subset())


def coverage_news(instance: dg.DagsterInstance) -> bool:
    keys = instance.get_dynamic_partitions(DROPS)
    parsed = set(instance.get_materialized_partitions(PARSED_DROP)) & set(keys)
    states = drop_states(instance, [k for k in keys if k not in parsed])
    given_up = {key for key, reason in states.items() if reason is not None}
    latest = instance.get_latest_materialization_event(PARSED_EVENTS)
    said = {k: getattr(v, "value", v) for k, v in latest.asset_materialization.metadata.items()} if latest else {}
    covered = set(said.get("drops") or ())
    named = {d["drop"]: d["reason"] for d in said.get("missing_drops") or ()}
    gone = {key for key, reason in named.items() if reason == TABLES_GONE_REASON}
    told = {key for key, reason in named.items() if reason not in (PENDING_REASON, TABLES_GONE_REASON)}
    if not (parsed - covered - gone or given_up - told):
        return False
    planned = instance.get_latest_planned_materialization_info(PARSED_EVENTS)
    record = instance.get_run_record_by_id(planned.run_id) if planned else None
    if record is None or record.dagster_run.status != dg.DagsterRunStatus.FAILURE:
        return True
    newest = instance.get_latest_materialization_event(PARSED_DROP)
    news_at = max([newest.timestamp if newest else 0.0]
                  + [_ended(instance, run_id) for run_id in _given_up_runs(instance, given_up - told)])
    return (record.start_time or 0.0) < news_at


def _given_up_runs(instance: dg.DagsterInstance, keys: set[str]) -> list[str]:
    attempts = instance.event_log_storage.get_latest_asset_partition_materialization_attempts_without_materializations(
        PARSED_DROP)
    return [attempts[key][0] for key in keys if key in attempts]


def _ended(instance: dg.DagsterInstance, run_id: str) -> float:
    record = instance.get_run_record_by_id(run_id)
    return (record.end_time or record.update_timestamp.timestamp()) if record else 0.0


PENDING = (dg.AutomationCondition.missing() & ~DropGivenUp()).with_label("pending")
#: Rebuild once nothing is in progress, when there is news of the drops; wait while a drop is still being tried.
EAGER_UNTIL_DROPS_SETTLE = (
    CoverageNews()
    & ~dg.AutomationCondition.newly_requested()
    & ~dg.AutomationCondition.in_progress()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.any_deps_match(PENDING).with_label("any_drop_pending")
).with_label("coverage news; waits for drops being parsed or retried")


def missing_drops(instance: dg.DagsterInstance, storage: StorageFolder, keys: list[str],
                  covered: list[str]) -> list[dict]:
    """The drops not in `covered`, each with its files and why it is missing."""
    states = drop_states(instance, [k for k in keys if k not in covered])
    parsed_before = instance.get_materialized_partitions(PARSED_DROP)
    return [{"drop": key, "files": drop_files(instance, storage, key),
             "reason": reason or (TABLES_GONE_REASON if key in parsed_before else PENDING_REASON)}
            for key, reason in states.items()]


def drop_files(instance: dg.DagsterInstance, storage: StorageFolder, key: str) -> list[str]:
    """The log files of a drop (junk riding along left out): from its stored manifest, else its parse run's config."""
    if storage.has("drops", key, "raw"):
        files = storage.manifest(key)
    else:
        runs = instance.get_run_records(dg.RunsFilter(tags={"dagster/partition": key}), limit=1, ascending=True)
        config = runs[0].dagster_run.run_config if runs else {}
        files = (config.get("ops", {}).get("raw_log_drops", {}).get("config", {}).get("files", []))
    return sorted(f["path"] for f in files if not f.get("skip"))
