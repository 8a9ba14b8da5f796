"""The drop sensor, the automation sensor that rebuilds everything downstream of the drops, and the failure sensor.

The drop sensor only stats the inbox. A file is taken when its size and mtime
are the same as on the previous tick (and it was last modified at least
`settle_seconds` ago); only then is it read once, to fingerprint its content
with sha256. All the settled new files of one tick make one drop: one
partition, one run, whose run key is the content-derived partition key.

Content already submitted (same sha256, whatever the name) starts nothing and is
reported as a duplicate; new content under a known name is new. Junk by name,
empty files and duplicates never start anything on their own; when a drop is
made, those of the same tick ride along in it, so the report lists them as
skipped or duplicate exactly as the CLI does for the same folder.

Cursor (JSON): {"files": {path: [size, mtime_ns, state]}, "submitted": {sha256: drop key}}
where state is "" (seen once, not settled yet), "skip" (junk or empty, listed in
a drop) or the sha256 of the content handled.

The failure sensor records every failed run (job, drop, step, the error's first
line) as an observation on each asset the run did not build, and posts it to
`CALO_FAILURE_WEBHOOK` when set; the next report lists it too (`failures`).
"""

import json
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import dagster as dg

from calo_assets.defs.assets import drops, parsed_drop, raw_log_drops
from calo_assets.defs.failures import FailedRun
from calo_assets.defs.resources import FailureWebhook, InboxEntry, InboxFolder, drop_key

PENDING, SKIP = "", "skip"

ingest_drop = dg.define_asset_job(
    "ingest_drop", selection=[raw_log_drops, parsed_drop],
    description="Record one drop of log files and parse only those files")


@dataclass
class TickPlan:
    """What one tick decided: the new cursor state, and the drop to start (if any)."""

    state: dict
    drop: str | None = None
    files: list[dict] = field(default_factory=list)  # the drop's manifest: path, size, sha256, skip, duplicate_of
    waiting: list[str] = field(default_factory=list)  # seen, not settled yet
    duplicates: list[str] = field(default_factory=list)  # "path: same content as ..." lines
    vanished: list[str] = field(default_factory=list)


def empty_state() -> dict:
    return {"files": {}, "submitted": {}}


def plan_tick(entries: Iterable[InboxEntry], state: dict, now_ns: int, settle_ns: int,
              sha256_of: Callable[[str], str]) -> TickPlan:
    """Decide one tick from stat results alone; `sha256_of` is called only for settled new files."""
    known: dict[str, list] = state["files"]
    submitted: dict[str, str] = dict(state["submitted"])
    files: dict[str, list] = {}
    plan = TickPlan(state={"files": files, "submitted": submitted})
    skipped: list[InboxEntry] = []
    settled: list[InboxEntry] = []
    for entry in entries:
        prev = known.get(entry.path)
        if entry.skip:
            if prev is not None and prev[2] == SKIP:
                files[entry.path] = [entry.size, entry.mtime_ns, SKIP]  # already listed in a drop
            else:
                skipped.append(entry)
            continue
        if prev is None or prev[0] != entry.size or prev[1] != entry.mtime_ns:
            files[entry.path] = [entry.size, entry.mtime_ns, PENDING]  # first sight of this version
            plan.waiting.append(entry.path)
        elif prev[2] == PENDING and 0 <= now_ns - entry.mtime_ns < settle_ns:  # a future mtime: ticks decide
            files[entry.path] = prev
            plan.waiting.append(entry.path)
        elif prev[2] == PENDING:
            settled.append(entry)
        else:
            files[entry.path] = prev  # handled before
    this_tick: dict[str, str] = {}
    hashed: list[tuple[InboxEntry, str, str]] = []  # entry, sha256, what it duplicates ("" when new)
    for entry in sorted(settled):
        try:
            sha = sha256_of(entry.path)
        except OSError:
            plan.vanished.append(entry.path)
            continue
        files[entry.path] = [entry.size, entry.mtime_ns, sha]
        if sha in submitted:
            original = f"a file of drop {submitted[sha]}"
        elif sha in this_tick:
            original = this_tick[sha]
        else:
            original = ""
            this_tick[sha] = entry.path
        if original:
            plan.duplicates.append(f"{entry.path}: same content as {original}")
        hashed.append((entry, sha, original))
    if this_tick:  # new content: one drop, with everything settled this tick riding along
        plan.drop = drop_key((e.path, sha) for e, sha, _ in hashed)
        for entry, sha, original in hashed:
            submitted.setdefault(sha, plan.drop)
            plan.files.append({"path": entry.path, "size": entry.size, "sha256": sha, "skip": "",
                               "duplicate_of": original})
        for entry in sorted(skipped):
            files[entry.path] = [entry.size, entry.mtime_ns, SKIP]
            plan.files.append({"path": entry.path, "size": entry.size, "sha256": "", "skip": entry.skip,
                               "duplicate_of": ""})
    return plan


def load_state(cursor: str | None) -> dict:
    if not cursor:
        return empty_state()
    state = json.loads(cursor)
    return {"files": state.get("files", {}), "submitted": state.get("submitted", {})}


def dump_state(state: dict) -> str:
    return json.dumps(state, separators=(",", ":"), sort_keys=True)


def _listing(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


@dg.sensor(job=ingest_drop, minimum_interval_seconds=15, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Starts one run per drop of settled new log files in the inbox (stat only)")
def log_drop_sensor(context: dg.SensorEvaluationContext, inbox: InboxFolder) -> dg.SensorResult | dg.SkipReason:
    started = time.perf_counter()
    plan = plan_tick(inbox.scan(), load_state(context.cursor), time.time_ns(), int(inbox.settle_seconds * 1e9),
                     inbox.sha256)
    cursor = dump_state(plan.state)
    changed = cursor != (context.cursor or dump_state(empty_state()))
    took = f"{time.perf_counter() - started:.2f}s"
    notes = []
    if plan.duplicates:
        lead = ("riding along as duplicate(s)" if plan.drop else "duplicate drop, nothing to start")
        notes.append(f"{len(plan.duplicates)} file(s) {lead}: {_listing(plan.duplicates, 3)}")
    if plan.waiting:
        notes.append(f"{len(plan.waiting)} file(s) not settled yet: {_listing(plan.waiting, 3)}")
    if plan.vanished:
        notes.append(f"{len(plan.vanished)} file(s) vanished before they could be read")
    for note in notes:
        context.log.info(note)
    if plan.drop is None:
        reason = "; ".join(notes) or f"no new log files in {inbox.root}"
        if changed:
            return dg.SensorResult(skip_reason=dg.SkipReason(f"{reason} ({took})"), cursor=cursor)
        return dg.SkipReason(f"{reason} ({took})")
    new = [f for f in plan.files if not f["skip"] and not f["duplicate_of"]]
    context.log.info(f"drop {plan.drop}: {len(new)} file(s) of new content, "
                     f"{len(plan.files) - len(new)} riding along (junk, empty or duplicate) ({took})")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(
            run_key=plan.drop, partition_key=plan.drop,
            run_config={"ops": {"raw_log_drops": {"config": {"files": plan.files}}}},
            tags={"calo/drop": plan.drop, "calo/files": str(len(plan.files))})],
        dynamic_partitions_requests=[drops.build_add_request([plan.drop])],
        cursor=cursor,
    )


#: Rebuild runs are retried (from the failed step) also when a step failed after its in-run retries, e.g. a
#: reports folder that could not be written: the report then catches up without waiting for new data.
REBUILD_RUN_TAGS = {"dagster/retry_on_asset_or_op_failure": "true"}

with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.BetaWarning)  # use_user_code_server: beta in 1.13, needed for DropGivenUp
    automation = dg.AutomationConditionSensorDefinition(
        "rebuild_after_drops", target=dg.AssetSelection.all(), default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=15, run_tags=REBUILD_RUN_TAGS,
        use_user_code_server=True,  # the condition of parsed_events asks the instance which drops were given up
        description="Rebuilds parsed_events, the ledger, the findings and the reports once the drops in flight "
                    "are parsed (or given up)")


@dg.run_failure_sensor(default_status=dg.DefaultSensorStatus.RUNNING, minimum_interval_seconds=10,
                       description="Records each failed run on the assets it did not build, and posts it to "
                                   "CALO_FAILURE_WEBHOOK when set")
def record_run_failures(context: dg.RunFailureSensorContext, failure_webhook: FailureWebhook) -> None:
    failed = FailedRun(context.instance, context.dagster_run)
    failure = failed.record()
    where = f" in {failure['step']}" if failure["step"] else ""
    for key, partition in failed.unbuilt:
        context.instance.report_runless_asset_event(dg.AssetObservation(
            asset_key=key, partition=partition,
            description=f"not built: run {failure['run_id'][:8]} failed{where}: {failure['error']}",
            metadata={"failed_run": dg.MetadataValue.dagster_run(failure["run_id"]),
                      **{k: dg.MetadataValue.text(str(v or "")) for k, v in failure.items() if k != "run_id"}}))
    context.log.info(f"run {failure['run_id']} ({failure['job']}) failed{where}: {failure['error']}")
    if problem := failure_webhook.post(failure):
        context.log.warning(f"could not post the failure to the webhook: {problem}")
