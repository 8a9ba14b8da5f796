"""The log generator on its own: determinism, layout, framing, and a truth that is exactly right.

The truth is checked against a deliberately small reader written here, not the
product's parser, so that a bug in one cannot hide a bug in the other.
"""

import gzip
import hashlib
import json
import re
import statistics
from collections import defaultdict
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from calo_testkit.generator import FAULT_KINDS, OUTCOMES, GroundTruth, generate_export, main
from calo_testkit.node_print import js_number, js_string

TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")
LOG_PATH = re.compile(
    r"balance-sync-logs/[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}/"
    r"\d{4}-\d\d-\d\d-\[\$LATEST\][0-9a-f]{32}/000000(\.gz|\.log|\.txt)?"
)
JUNK = {"__MACOSX/balance-sync-logs/._.DS_Store", "balance-sync-logs/.DS_Store"}
NUMBER = re.compile(r"-?\d+(\.\d+)?")
FIELD = re.compile(r"    (\w+): (.*?),?")
APPLICATION = re.compile(r"(\S+Z) \1\t[^\t]+\t(?:INFO|ERROR)\t(.*)", re.S)
TOLERANCE = Decimal("0.0015")
OUTCOME_PREFIXES = (
    ("SubscriptionBalanceUpdated", "applied"),
    ("Skipping the process, balance", "already_synced"),
    ("Balance is already synced", "already_synced"),
    ("An error occured", "failed"),
    ("{\n  message: 'Subscriber will have a negative", "refused"),
)
RECORD_KINDS = {
    "init_start", "start", "end", "report", "init_report", "runtime_unknown", "uncaught_exception", "invoke_error",
    "metric_subBalanceDiscrapancy", "metric_synBalanceError", "metric_negativeBalance", "processing_message",
    "start_syncing", "event_published", "already_synced", "not_in_sync", "sync_error", "refusal",
    "skip_create_subscription", "skip_update_flag", "transaction_lock", "transaction_json", "slack_notification",
    "sqs_record",
}


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    return root, generate_export(root, transactions=600, seed=3)


# --------------------------------------------------------------------------- a small reader


def snapshot(root: Path) -> dict[str, bytes]:
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def log_texts(root: Path, truth: GroundTruth) -> dict[str, str]:
    """Readable log files, one per distinct content (the overlapping copy is dropped)."""
    truncated = {fault["file"] for fault in truth.faults if fault["kind"] == "truncated_file"}
    texts, seen = {}, set()
    for relative, data in snapshot(root).items():
        if relative in JUNK or relative in truncated:
            continue
        text = (gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data).decode("utf-8")
        digest = hashlib.sha256(text.encode()).digest()
        if digest not in seen:
            seen.add(digest)
            texts[relative] = text
    return texts


def records(text: str) -> list[str]:
    assert text.endswith("\n\n"), "every record is followed by a blank line"
    return text[:-2].split("\n\n")


def message(record: str) -> str:
    """The message of an application record (after timestamp, timestamp, request id, level)."""
    match = APPLICATION.match(record)
    return match.group(2) if match else ""


def parse_block(record: str) -> dict | None:
    """The transaction of a Start syncing record, or None when the object is broken."""
    lines = record.split("\n")
    if lines[1:2] != ["  transaction: {"] or lines[-2:] != ["  }", "}"]:
        return None
    fields = {}
    for line in lines[2:-2]:
        match = FIELD.fullmatch(line)
        if match is None:
            return None
        fields[match.group(1)] = match.group(2).strip("'")
    for key in ("amount", "vat", "oldBalance", "newBalance", "paymentBalance"):
        if key in fields:
            if not NUMBER.fullmatch(fields[key]):
                return None
            fields[key] = Decimal(fields[key])
    if "newBalance" not in fields:
        return None
    fields["time"] = record[:24]
    return fields


def read_blocks(texts: dict[str, str]) -> tuple[list[dict], int, dict[str, int]]:
    """Blocks with their outcome, the malformed count, and a few record counts."""
    blocks, malformed, counts = [], 0, defaultdict(int)
    for relative, text in texts.items():
        current = None
        for record in records(text):
            body = message(record)
            counts["records"] += 1
            counts["json_form"] += body.startswith("transaction {")
            counts["sync_errors"] += body.startswith("Subscription balance and payment balance are not in sync")
            if body.startswith("Processing message") or record[25:].startswith("END RequestId"):
                current = None
            if body.startswith("Start syncing the balance {"):
                block = parse_block(record)
                if block is None:
                    malformed += 1
                    continue
                block.update(file=relative, outcome="unknown")
                blocks.append(block)
                current = block
            elif current is not None:
                for prefix, outcome in OUTCOME_PREFIXES:
                    if body.startswith(prefix):
                        current["outcome"] = outcome
    return blocks, malformed, counts


def fault_ids(truth: GroundTruth, kind: str) -> set[str]:
    return {tx for fault in truth.faults if fault["kind"] == kind for tx in fault["tx_ids"]}


def per_user(blocks: list[dict]) -> dict[str, list[dict]]:
    users = defaultdict(list)
    for block in sorted(blocks, key=lambda b: b["time"]):
        users[block["userId"]].append(block)
    return users


def seconds(block: dict) -> float:
    return datetime.fromisoformat(block["time"].replace("Z", "+00:00")).timestamp()


# --------------------------------------------------------------------------- tests


def test_same_seed_same_bytes(tmp_path):
    generate_export(tmp_path / "a", transactions=150, seed=11)
    generate_export(tmp_path / "b", transactions=150, seed=11)
    assert snapshot(tmp_path / "a") == snapshot(tmp_path / "b")


def test_another_seed_another_export(tmp_path):
    generate_export(tmp_path / "a", transactions=150, seed=11)
    generate_export(tmp_path / "b", transactions=150, seed=12)
    assert snapshot(tmp_path / "a") != snapshot(tmp_path / "b")


def test_layout_and_names(export):
    root, truth = export
    files = snapshot(root)
    logs = [path for path in files if path not in JUNK]
    assert JUNK <= set(files)
    assert all(LOG_PATH.fullmatch(path) for path in logs), [p for p in logs if not LOG_PATH.fullmatch(p)]
    names = {path.rsplit("/", 1)[1] for path in logs}
    assert names == {"000000.gz", "000000", "000000.log", "000000.txt"}
    gzip_without_gz = [p for p in logs if files[p][:2] == b"\x1f\x8b" and not p.endswith(".gz")]
    assert gzip_without_gz
    assert files["__MACOSX/balance-sync-logs/._.DS_Store"][:4] == b"\x00\x05\x16\x07"
    assert len({path.split("/")[1] for path in logs}) == 2  # the export and the overlapping one
    assert truth.files == {
        "written": len(files),
        "gzip": sum(files[p][:2] == b"\x1f\x8b" for p in logs),
        "plain": sum(files[p][:2] != b"\x1f\x8b" for p in logs),
        "junk": 2,
        "truncated": 1,
        "duplicate": 1,
    }


def test_gzip_files_are_valid_except_the_truncated_one(export):
    root, truth = export
    (truncated,) = [fault["file"] for fault in truth.faults if fault["kind"] == "truncated_file"]
    for relative, data in snapshot(root).items():
        if data[:2] != b"\x1f\x8b":
            continue
        if relative == truncated:
            with pytest.raises(EOFError):
                gzip.decompress(data)
        else:
            gzip.decompress(data)


def test_every_record_starts_with_a_timestamp(export):
    root, truth = export
    backwards = 0
    for text in log_texts(root, truth).values():
        stamps = []
        for record in records(text):
            first, *continuation = record.split("\n")
            assert TIMESTAMP.match(first), first
            assert not any(TIMESTAMP.match(line) for line in continuation)
            assert "" not in continuation
            stamps.append(first[:24])
        backwards += sum(later < earlier for earlier, later in zip(stamps, stamps[1:]))
    assert backwards > 0, "some lines go back in time inside a file"


def test_files_overlap_in_time(export):
    root, truth = export
    spans = sorted((min(stamps), max(stamps)) for stamps in (
        [record[:24] for record in records(text)] for text in log_texts(root, truth).values()))
    assert any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:]))


def test_invocations_batch_up_to_twelve_messages(export):
    root, truth = export
    batches = [invocation.count("\tProcessing message ")
               for text in log_texts(root, truth).values() for invocation in text.split(" START RequestId: ")[1:]]
    assert max(batches) <= 12
    assert sum(size > 1 for size in batches) > 0.2 * len(batches)


def test_every_fault_kind_is_recorded_where_it_is(export):
    root, truth = export
    assert {fault["kind"] for fault in truth.faults} == set(FAULT_KINDS)
    files = snapshot(root)
    for fault in truth.faults:
        assert fault["file"] in files
        if fault["tx_ids"] and fault["kind"] != "truncated_file":
            text = log_texts(root, truth).get(fault["file"]) or ""
            assert all(tx in text for tx in fault["tx_ids"][-1:]), fault


def test_truth_matches_an_independent_reading(export):
    root, truth = export
    blocks, malformed, counts = read_blocks(log_texts(root, truth))
    assert truth.transactions == len(blocks) == 600
    assert truth.malformed == malformed == 4  # 2 per 300 transactions
    assert truth.users == len({b["userId"] for b in blocks})
    assert truth.per_currency == {c: sum(b["currency"] == c for b in blocks) for c in truth.per_currency}
    assert set(truth.per_currency) == {"BHD", "SAR", "AED", "KWD", "QAR"}
    assert truth.old_shape == sum("type" not in b for b in blocks) > 0
    assert truth.json_form == counts["json_form"] > 0
    assert truth.sync_errors == counts["sync_errors"]
    assert truth.outcomes == {name: sum(b["outcome"] == name for b in blocks) for name in OUTCOMES}
    assert sum(truth.record_kinds.values()) == counts["records"]
    assert truth.record_kinds["start_syncing"] == truth.transactions + truth.malformed
    assert set(truth.record_kinds) == RECORD_KINDS
    assert all(count > 0 for count in truth.outcomes.values())
    by_id = defaultdict(set)
    for block in blocks:
        by_id[block["id"]].add(block["outcome"])
    for kind, outcomes in (("overdraft", {"refused"}), ("sync_failed", {"failed"}),
                           ("repeat_delivery", {"applied", "already_synced"}), ("duplicate_tx_id", {"applied"})):
        assert all(by_id[tx] == outcomes for tx in fault_ids(truth, kind)), kind


def test_text_carries_the_rarer_forms(export):
    root, truth = export
    text = "".join(log_texts(root, truth).values())
    needles = ("Balance is already synced from other listeners", "Skipping the process, balance is already synced",
               "create web subscription", "metadata: undefined,", "metadata: `{", 'metadata: "',
               r'\\"ar\\":')  # Arabic inside nested JSON, escaped twice
    for needle in needles:
        assert needle in text, needle
    assert re.search(r"Balance: -?\d+\.\d{13,}", text), "float noise on some balance"
    assert re.search(r"paymentBalance: -\d", text), "a negative wallet"


def test_clean_transactions_are_clean(export):
    """Outside the recorded faults: exact arithmetic, continuous chains, no bursts, no look-alikes."""
    root, truth = export
    blocks, _, _ = read_blocks(log_texts(root, truth))
    faulty = {tx for fault in truth.faults for tx in fault["tx_ids"]}
    for block in blocks:
        net = block["amount"] - block["vat"]
        expected = [block["oldBalance"] - net] if block.get("type") == "DEBIT" else [block["oldBalance"] + net]
        if "type" not in block:
            expected.append(block["oldBalance"] - net)
        if block["id"] not in fault_ids(truth, "balance_mismatch"):
            assert min(abs(block["newBalance"] - e) for e in expected) <= TOLERANCE, block
        if block["newBalance"] < 0:
            assert block["id"] in fault_ids(truth, "overdraft")
        if block.get("paymentBalance", block["newBalance"]) != block["newBalance"]:
            assert block["id"] in fault_ids(truth, "out_of_sync")
        if block.get("action") == "INVAILID_ENTRY":
            assert block["id"] in fault_ids(truth, "invalid_action")
    ids = defaultdict(int)
    for block in blocks:
        ids[block["id"]] += 1
    repeated = fault_ids(truth, "repeat_delivery") | fault_ids(truth, "duplicate_tx_id")
    assert {tx for tx, n in ids.items() if n > 1} == repeated
    for chain in per_user(blocks).values():
        applied = [b for b in chain if b["outcome"] == "applied"]
        for before, after in zip(applied, applied[1:]):
            if after["id"] not in fault_ids(truth, "continuity_break"):
                assert abs(after["oldBalance"] - before["newBalance"]) <= TOLERANCE, (before, after)
        for first, third in zip(chain, chain[2:]):
            if seconds(third) - seconds(first) <= 1:
                assert {first["id"], third["id"]} <= fault_ids(truth, "burst")
        for i, block in enumerate(chain):
            for other in chain[i + 1 :]:
                if seconds(other) - seconds(block) > 60:
                    break
                if other["amount"] == block["amount"]:
                    assert {block["id"], other["id"]} <= fault_ids(truth, "rapid_manual_deduction")
        amounts = [b["amount"] for b in chain]
        if len(amounts) >= 5:
            median = statistics.median(amounts)
            mad = statistics.median(abs(a - median) for a in amounts)
            for block in chain:
                if mad and Decimal("0.6745") * abs(block["amount"] - median) / mad > Decimal("3.5"):
                    assert block["id"] in fault_ids(truth, "mad_spike")
    assert faulty  # the export does hold faults, so the checks above had something to skip


def test_scale_is_respected_and_clean_exports_hold_no_faults(tmp_path):
    truth = generate_export(tmp_path / "big", transactions=2500, seed=5)
    assert truth.transactions == 2500
    assert len([f for f in truth.faults if f["kind"] == "balance_mismatch"]) == round(2500 / 300)
    clean = generate_export(tmp_path / "clean", transactions=40, seed=5, faults=False)
    assert clean.transactions == 40
    assert clean.faults == [] and clean.malformed == 0
    assert clean.files["truncated"] == clean.files["duplicate"] == 0
    assert clean.outcomes["applied"] + clean.outcomes["unknown"] == 40
    assert generate_export(tmp_path / "one", transactions=5, users=1, faults=False).users == 1


def test_refuses_what_it_cannot_do(tmp_path):
    with pytest.raises(ValueError):
        generate_export(tmp_path / "small", transactions=20)
    generate_export(tmp_path / "again", transactions=60)
    with pytest.raises(FileExistsError):
        generate_export(tmp_path / "again", transactions=60)


def test_cli_writes_export_and_truth(tmp_path, capsys):
    argv = [str(tmp_path / "out"), "--transactions", "80", "--seed", "2", "--truth", str(tmp_path / "t.json")]
    assert main(argv) == 0
    truth = GroundTruth.read(tmp_path / "t.json")
    assert truth.transactions == 80
    assert json.loads(truth.to_json())["files"]["written"] == len(snapshot(tmp_path / "out"))
    assert "80 transactions" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("value", "text"),
    [("8", "8"), ("8.0", "8"), ("-3.50", "-3.5"), ("0.1", "0.1"), ("60.181000000000004", "60.181000000000004"),
     ("-103371.09", "-103371.09"), ("1E+2", "100"), ("0.000001", "0.000001"), ("1060.1810000000000040", "1060.181")],
)
def test_js_number(value, text):
    assert js_number(Decimal(value)) == text


@given(st.decimals(min_value=-10**9, max_value=10**9, places=3, allow_nan=False))
def test_js_number_reads_back_as_the_same_double(value):
    assert float(Decimal(js_number(value))) == float(value)


@pytest.mark.parametrize(
    ("text", "quoted"),
    [("BHD", "'BHD'"), ("it's", '"it\'s"'), ('{"a":"it\'s"}', '`{"a":"it\'s"}`'),
     ('{"a":"\\"x"}', "'{\"a\":\"\\\\\"x\"}'"), ("عدس", "'عدس'"), ("a\nb", "'a\\nb'")],
)
def test_js_string_quotes_like_util_inspect(text, quoted):
    assert js_string(text) == quoted


def test_every_scheduled_kind_and_outcome_has_its_writer_in_the_tables():
    """The writers are looked up in explicit tables, so a kind added without one fails here, not mid-export."""
    from calo_testkit import generator

    export = generator._Export
    in_messages = set(export._ITEMS) | set(generator._FLAVOURS)
    assert in_messages | set(generator._INVOCATION_ITEMS) == set(generator._FAULT_RATES) | set(generator._FEATURE_RATES)
    assert not set(export._ITEMS) & set(generator._FLAVOURS)
    assert set(export._OUTCOMES) == set(OUTCOMES)
    assert set(export._PRELUDES) <= set(generator._FLAVOURS)
