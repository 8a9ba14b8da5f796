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


GIVEN_UP = dg.AutomationCondition.missing() & DropGivenUp()
PENDING = (dg.AutomationCondition.missing() & ~DropGivenUp()).with_label("pending")
#: Eager, but it also fires when a drop is given up (so the report says so), and waits for pending drops.
EAGER_UNTIL_DROPS_SETTLE = (
    dg.AutomationCondition.eager()
    .replace("any_deps_updated", (dg.AutomationCondition.any_deps_updated()
                                  | dg.AutomationCondition.any_deps_match(GIVEN_UP.newly_true()))
             .with_label("any_deps_updated_or_given_up"))
    .without(~dg.AutomationCondition.any_deps_missing())
    & ~dg.AutomationCondition.any_deps_match(PENDING).with_label("any_drop_pending")
    & dg.AutomationCondition.any_deps_match(~dg.AutomationCondition.missing()).with_label("any_drop_parsed")
).with_label("eager; waits for drops being parsed or retried, fires when one is given up")


def missing_drops(instance: dg.DagsterInstance, storage: StorageFolder, keys: list[str],
                  covered: list[str]) -> list[dict]:
    """The drops not in `covered`, each with its files and why it is missing."""
    states = drop_states(instance, [k for k in keys if k not in covered])
    parsed_before = instance.get_materialized_partitions(PARSED_DROP)
    return [{"drop": key, "files": drop_files(instance, storage, key),
             "reason": reason or ("parsed, but its stored tables are gone: re-materialize it" if key in parsed_before
                                  else "still being parsed or waiting for a retry")}
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
