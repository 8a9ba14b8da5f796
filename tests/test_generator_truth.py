"""The product's reader, ledger and detectors against the generator's ground truth.

Every record kind is counted, every injected fault is found where the truth
says, and no clean transaction raises a fault's flag.
"""

from pathlib import Path

import polars as pl
import pytest

from calo_assets.analysis import analyze_folder
from calo_testkit.generator import GroundTruth, generate_export
from calo_assets.settings import Settings

REPO = Path(__file__).resolve().parents[1]

#: record kind in the generator's truth -> the reader's record count key(s)
RECORD_KEYS = {
    "init_start": ["platform:INIT_START"], "start": ["platform:START"], "end": ["platform:END"],
    "report": ["platform:REPORT"], "init_report": ["platform:INIT_REPORT"], "runtime_unknown": ["platform:RUNTIME_ERROR"],
    "uncaught_exception": ["application:crash"], "invoke_error": ["application:invoke_error"],
    "processing_message": ["application:processing_message"], "start_syncing": ["application:start_syncing"],
    "event_published": ["application:event_published"], "already_synced": ["application:already_synced"],
    "not_in_sync": ["application:not_in_sync"], "sync_error": ["application:sync_failed"],
    "refusal": ["application:refusal"], "skip_create_subscription": ["application:skip_create_subscription"],
    "skip_update_flag": ["application:skip_payment_flag_false"], "transaction_lock": ["application:transaction_lock"],
    "transaction_json": ["application:transaction_json"], "slack_notification": ["application:slack_notification"],
    "sqs_record": ["application:sqs_record"],
}
#: fault kind -> (anomaly type that must name exactly the truth's transactions, or None when it is an outcome)
FAULT_FINDINGS = {
    "balance_mismatch": "BalanceMismatch", "continuity_break": "ContinuityBreak", "overdraft": "Overdraft",
    "repeat_delivery": "RepeatDelivery", "invalid_action": "InvalidAction", "mad_spike": "MADSpike",
    "out_of_sync": "OutOfSync", "duplicate_tx_id": "DuplicateTxId", "rapid_manual_deduction": "RapidManualDeduction",
    "burst": "Burst",
}


@pytest.fixture(scope="module", params=["bundled sample", "seed 5, 1500 transactions"])
def case(request, tmp_path_factory):
    if request.param == "bundled sample":
        root, truth = REPO / "data" / "inbox", GroundTruth.read(REPO / "data" / "sample_truth.json")
    else:
        root = tmp_path_factory.mktemp("export")
        truth = generate_export(root, transactions=1500, seed=5)
    return analyze_folder(root, Settings()), truth


def record_count(analysis, keys):
    """Records of the kinds in `keys`, leaving out what the reader salvaged from truncated files
    (the truth counts a truncated file nowhere)."""
    truncated = analysis.parsed.files.filter(pl.col("truncated"))["path"]
    counts = analysis.parsed.record_counts.filter(~pl.col("sourceFile").is_in(truncated.implode())
                                                  & pl.col("kind").is_in(keys))
    return int(counts["count"].sum())


def test_counts_match_the_truth(case):
    a, truth = case
    s = a.summary
    assert s["transactions"] == truth.transactions
    assert s["users"] == truth.users
    assert a.parsed.rejects.filter(pl.col("kind") == "transaction_block").height == truth.malformed
    assert {c: v["transactions"] for c, v in s["currencies"].items()} == truth.per_currency
    assert (a.ledger["shape"] == "old").sum() == truth.old_shape
    assert a.ledger["jsonMerged"].sum() == truth.json_form
    assert s["outcomes"] == truth.outcomes
    assert s["sync_errors"] == truth.sync_errors
    files = s["files"]
    assert files["skipped"] == truth.files["junk"] and files["truncated"] == truth.files["truncated"]
    assert files["duplicate"] == truth.files["duplicate"]
    assert files["read"] + files["skipped"] + files["duplicate"] == truth.files["written"]


def test_every_record_kind_is_recognised_and_counted(case):
    a, truth = case
    for kind, keys in RECORD_KEYS.items():
        assert record_count(a, keys) == truth.record_kinds.get(kind, 0), kind
    metrics = a.parsed.events.filter(pl.col("kind") == "metric")["metric"].value_counts()
    for name, n in zip(metrics["metric"], metrics["count"]):
        assert truth.record_kinds[f"metric_{name}"] == n
    assert "unrecognised" not in a.summary["records"]


def test_the_reconciliation_holds(case):
    a, _ = case
    r = a.summary["reconciliation"]
    assert r["transaction_blocks_seen"] == r["transactions"] + r["rejected_blocks"] + r["duplicate_blocks_collapsed"]


def test_each_fault_is_found_where_the_truth_says_and_only_there(case):
    a, truth = case
    findings = a.anomalies
    for kind, anomaly in FAULT_FINDINGS.items():
        faults = [f for f in truth.faults if f["kind"] == kind]
        assert faults, f"the generator injected no {kind}"
        expected = {f["tx_ids"][-1] if kind in ("rapid_manual_deduction", "duplicate_tx_id") else f["tx_ids"][0]
                    for f in faults}
        found = set(findings.filter(pl.col("type") == anomaly)["transactionId"])
        if kind == "burst":  # one finding per burst, named by its first transaction
            bursts = findings.filter(pl.col("type") == "Burst")
            found = {tx for first, rest in zip(bursts["transactionId"], bursts["relatedIds"])
                     for tx in [first, *rest.split(",")]}
            expected = {tx for f in faults for tx in f["tx_ids"]}
        assert found == expected, kind


def test_outcome_and_file_faults(case):
    a, truth = case
    outcome = dict(zip(a.ledger["id"], a.ledger["outcome"]))
    for f in truth.faults:
        if f["kind"] == "sync_failed":
            assert outcome[f["tx_ids"][0]] == "failed"
        if f["kind"] == "overdraft":
            row = a.ledger.filter(pl.col("id") == f["tx_ids"][0]).row(0, named=True)
            assert row["attemptedOverdraft"] and row["outcome"] == "refused"
        if f["kind"] == "malformed_block":
            assert f["tx_ids"][0] not in outcome
            assert f["file"].split("/", 1)[-1] in "\n".join(a.parsed.rejects["sourceFile"])
        if f["kind"] in ("truncated_file", "duplicate_file"):
            status = a.parsed.files.filter(pl.col("path").str.ends_with(f["file"])).row(0, named=True)
            assert status["truncated"] if f["kind"] == "truncated_file" else status["status"] == "duplicate"
