"""The columnar reader and the full parser give the same tables, on real, generated and mutated logs.

The columnar path is the fast one; the full parser reads record by record and
is what the columnar path hands anything unusual to. They must agree row for
row, value for value, on everything: the real export, the generator's
fault-laden exports, and logs a fuzzer mutated (cut records, duplicated and
shuffled lines, random bytes, unbalanced braces and quotes, huge numbers). Under
mutation no exception may escape, every transaction block must end up as a
ledger row or a reject with file and line, and the reconciliation must hold.
"""

import gzip
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

import calo_assets.reading as reading
from calo_assets.analysis import analyze
from calo_assets.combine import combine
from calo_assets.files import RunBudget, walk
from calo_testkit.generator import generate_export
from calo_assets.parsed import ParsedLogs
from calo_assets.reading import read_logs
from calo_assets.settings import ReadLimits, Settings
from calo_testkit.node_print import Raw, inspect
from tests.logbuilder import app, invocation, message, report_drop, tx, write_log

REAL_LOGS = Path(__file__).resolve().parents[1].parent / "shared" / "real-logs"


def full_parser(root: Path, limits: ReadLimits | None = None) -> ParsedLogs:
    """Every file through the record-by-record parser, as the reader did before it had a columnar path."""
    limits = limits or ReadLimits()
    read = reading._full_parser_read(list(walk(root)), limits, RunBudget(limits.max_run_bytes))
    return combine([ParsedLogs(files=reading._files_table(read.files), **read.tables)])


def assert_same(columnar: ParsedLogs, full: ParsedLogs) -> None:
    for name, frame in full.tables().items():
        try:
            assert_frame_equal(columnar.tables()[name], frame)
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from None


def files_read_by_the_full_parser(root: Path, monkeypatch) -> int:
    count = {"files": 0}
    original = reading._full_parser_read

    def spy(entries, limits, budget):
        count["files"] += len(entries)
        return original(entries, limits, budget)

    monkeypatch.setattr(reading, "_full_parser_read", spy)
    read_logs(root, workers=0)
    return count["files"]


@pytest.mark.real_logs
def test_both_paths_agree_on_the_real_export(real_logs, monkeypatch):
    assert_same(read_logs(real_logs, workers=0), full_parser(real_logs))
    assert files_read_by_the_full_parser(real_logs, monkeypatch) == 0  # the columnar path read every file


def test_both_paths_agree_on_a_generated_export_with_faults(tmp_path, monkeypatch):
    generate_export(tmp_path / "export", transactions=3000, seed=5)
    columnar = read_logs(tmp_path / "export", workers=2)
    assert_same(columnar, full_parser(tmp_path / "export"))
    assert columnar.rejects.height > 0 and (columnar.files["truncated"]).any()
    fallbacks = files_read_by_the_full_parser(tmp_path / "export", monkeypatch)
    assert fallbacks < columnar.files.height / 10


def test_both_paths_agree_on_every_report_feature_and_on_hostile_files(tmp_path):
    report_drop(tmp_path / "features")
    records = invocation(0, "r1", [message(5, "r1", tx(action="CAF\udce9"))])  # invalid UTF-8
    (tmp_path / "latin.log").write_bytes("".join(r + "\r\n\r\n" for r in records).encode("utf-8", "surrogateescape"))
    long = invocation(0, "r2", [message(5, "r2", tx())])
    long.insert(2, app(3, "r2", "x" * 3_000_000))
    write_log(tmp_path / "long.log", long, compress=False)
    write_log(tmp_path / "crlf.log", [r.replace("\n", "\r\n") for r in invocation(0, "r3", [message(5, "r3", tx())])],
              compress=False)
    limits = ReadLimits(max_line_bytes=1_000_000)
    assert_same(read_logs(tmp_path, limits, workers=0), full_parser(tmp_path, limits))


def test_the_run_cap_refuses_the_same_files_in_file_order(tmp_path):
    for i in range(6):
        write_log(tmp_path / f"f{i}.log", invocation(0, f"r{i}", [message(5, f"r{i}", tx())] * 20), compress=False)
    size = (tmp_path / "f0.log").stat().st_size
    limits = ReadLimits(max_run_bytes=int(size * 3.5))
    columnar, full = read_logs(tmp_path, limits, workers=0), full_parser(tmp_path, limits)
    assert_same(columnar, full)
    assert columnar.files["status"].to_list() == ["read"] * 3 + ["refused"] * 3


# -- fuzzing ---------------------------------------------------------------------------------------------


def base_records() -> list[str]:
    """One file's worth of records with every kind of block and message the reader ties together."""
    json_form = app(21, "r2", 'transaction {"id":"JSON1","paymentMethod":"cc","userBalance":3.5,"name":"X"}')
    error = app(9, "r1", "Subscription balance and payment balance are not in sync " + inspect(
        {"userId": "u1", "subscriptionBalance": Raw("16.4"), "paymentBalance": Raw("20.1")}), "ERROR")
    first = message(5, "r1", tx(user="u1", tx_id="T1", amount="8", old="24.4", new="16.4"), message_id="m1")
    return (invocation(0, "r1", [first[:2] + [error] + first[2:],
                                 message(12, "r1", tx(user="u2", tx_id="T2", old_shape=True, amount="60.181000000000004",
                                                      old="100", new="39.818999999999996"), "already_synced")])
            + invocation(20, "r2", [[app(20, "r2", "Processing message m3"), json_form]
                                    + message(22, "r2", tx(user="u3", tx_id="JSON1"), "refused")[1:],
                                    message(30, "r2", tx(user="u4", tx_id="T4", currency="SAR"), "failed")])
            + ['2024-01-10T08:00:01.000Z {"_aws":{"CloudWatchMetrics":[{"Metrics":[{"Name":"negativeBalance"}]}]},'
               '"userId":"u1"}',
               "2024-01-10T08:00:02.000Z 2024-01-10T08:00:02.000Z\tundefined\tERROR\tUncaught Exception \t"
               '{"errorType":"TypeError"}'])


def mutate(text: str, rng: random.Random, how: str) -> str:
    lines = text.split("\n")
    at = rng.randrange(len(lines))
    if how == "cut":
        return text[: rng.randrange(len(text))]
    if how == "duplicate":
        return "\n".join(lines[:at] + [lines[at]] + lines[at:])
    if how == "shuffle":
        end = min(len(lines), at + rng.randrange(2, 8))
        part = lines[at:end]
        rng.shuffle(part)
        return "\n".join(lines[:at] + part + lines[end:])
    if how == "bytes":
        where = rng.randrange(len(text))
        junk = "".join(chr(rng.choice([0x1c, 0x85, 0xa0, 0x2028, rng.randrange(0x20, 0x2ff)])) for _ in range(4))
        return text[:where] + junk + text[where:]
    if how == "brace":
        target = rng.choice(["{", "}", "[", "'", '"', "`", "\\", ","])
        spots = [i for i, ch in enumerate(text) if ch == target]
        where = rng.choice(spots) if spots else rng.randrange(len(text))
        return text[:where] + (rng.choice(["{", "}", "'", '"', "[", "\\"]) if rng.random() < 0.5 else "") \
            + text[where + 1:]
    if how == "number":
        huge = rng.choice(["1" + "0" * 30, "-99999999999999999999.5", "1e400", "0.0000000000000000000001",
                           "123.4567890123456789012345", "NaN", "-Infinity", "1.2.3", "+7", "00012", "-0"])
        return text.replace(rng.choice([": 8,", ": 24.4,", ": 16.4", ": 16.4,", ": 100,", ": 20.1"]), f": {huge},", 1)
    if how == "nest":
        return text.replace("vat: 0", "vat: " + rng.choice(["[", "{ a: ", "<ref *1> "]) * 3000, 1)
    if how == "stamp":
        stamps = [i for i in range(len(lines)) if lines[i][:4].isdigit()]
        if stamps:
            i = rng.choice(stamps)
            lines[i] = rng.choice(["2024-02-30T10:00:00.000Z", "2024-01-10T08:00:00.1Z", "2024-01-10T08:00:00Z",
                                   "٢٠٢٤-01-10T08:00:00.000Z"]) + lines[i][24:]
        return "\n".join(lines)
    raise ValueError(how)


MUTATIONS = ["cut", "duplicate", "shuffle", "bytes", "brace", "number", "nest", "stamp"]


def check_mutated(folder: Path, seed: int, hows: list[str]) -> ParsedLogs:
    rng = random.Random(seed)
    text = "".join(r + "\n\n" for r in base_records())
    for how in hows:
        text = mutate(text, rng, how)
    data = text.encode("utf-8", "surrogatepass")
    if rng.random() < 0.3:  # invalid UTF-8 now and then
        where = rng.randrange(len(data) + 1)
        data = data[:where] + b"\xff\xfe" + data[where:]
    path = folder / "2024-01-10-[$LATEST]ab" / ("000000.gz" if rng.random() < 0.5 else "000000")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data, mtime=0) if path.name.endswith(".gz") else data)
    columnar = read_logs(folder, workers=0)  # nothing may escape
    assert_same(columnar, full_parser(folder))
    ledger = analyze(columnar, Settings()).ledger
    rec = columnar.reconciliation()
    assert rec["transaction_blocks_seen"] == ledger.height + rec["rejected_blocks"] + rec["duplicate_blocks_collapsed"]
    assert columnar.rejects.filter(columnar.rejects["sourceFile"].is_null() | columnar.rejects["line"].is_null()).height == 0
    return columnar


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), hows=st.lists(st.sampled_from(MUTATIONS), min_size=1, max_size=4))
def test_mutated_logs_read_the_same_both_ways_and_lose_nothing(tmp_path_factory, seed, hows):
    check_mutated(tmp_path_factory.mktemp("fuzz"), seed, hows)
