"""One crafted input per rule of "Reading files": each must be read, skipped or refused as stated."""

import gzip
import os
import tracemalloc
import zlib

import polars as pl
import pytest

from calo_assets.reading import read_logs
from calo_assets.settings import ReadLimits
from calo_testkit.node_print import Raw
from tests.logbuilder import simple_log, start_syncing, tx, write_log, app, invocation, message


def status(parsed, path):
    row = parsed.files.filter(pl.col("path") == path).row(0, named=True)
    return row


def test_gzip_by_magic_bytes_whatever_the_name(tmp_path):
    for name, compress in [("a/000000.gz", True), ("b/no-extension", True), ("c/plain.log", False),
                           ("d/plain.txt", False), ("e/plain-no-ext", False), ("f/2024-01-10-[$LATEST]ab/x.gz", True)]:
        simple_log(tmp_path, [tx()], name=name) if compress == name.endswith(".gz") else \
            write_log(tmp_path / name, invocation(0, "r-" + name[0], [message(5, "r-" + name[0], tx())]), compress)
    parsed = read_logs(tmp_path)
    assert parsed.files["status"].to_list() == ["read"] * 6
    assert parsed.files.filter(pl.col("gzip"))["path"].to_list() == ["a/000000.gz", "b/no-extension",
                                                                     "f/2024-01-10-[$LATEST]ab/x.gz"]
    assert parsed.transactions.height == 6


def test_junk_is_skipped_with_a_reason(tmp_path):
    simple_log(tmp_path, [tx()])
    (tmp_path / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (tmp_path / "__MACOSX").mkdir()
    (tmp_path / "__MACOSX" / "._000000.gz").write_bytes(b"\x00\x05\x16\x07")
    (tmp_path / "empty.log").write_bytes(b"")
    (tmp_path / "picture.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
    (tmp_path / "notes.txt").write_text("just some words\nno timestamps here\n")
    parsed = read_logs(tmp_path)
    reasons = {r["path"]: (r["status"], r["reason"]) for r in parsed.files.iter_rows(named=True)}
    assert reasons[".DS_Store"][0] == "skipped" and "metadata" in reasons[".DS_Store"][1]
    assert "macOS" in reasons["__MACOSX/._000000.gz"][1]
    assert reasons["empty.log"] == ("skipped", "empty file")
    assert reasons["picture.png"][0] == "skipped" and "binary" in reasons["picture.png"][1]
    assert reasons["notes.txt"][0] == "skipped" and "no log records" in reasons["notes.txt"][1]
    assert parsed.transactions.height == 1


def test_symlink_leaving_the_input_folder_is_not_followed(tmp_path):
    outside = simple_log(tmp_path / "outside", [tx()])
    inbox = tmp_path / "inbox"
    simple_log(inbox, [tx()])
    os.symlink(outside, inbox / "escape.gz")
    os.symlink(outside.parent, inbox / "escape-dir")
    parsed = read_logs(inbox)
    reasons = dict(zip(parsed.files["path"], parsed.files["reason"]))
    assert "outside the input folder" in reasons["escape.gz"]
    assert "not followed" in reasons["escape-dir"]
    assert parsed.transactions.height == 1


def test_concatenated_gzip_members_are_all_read(tmp_path):
    first = invocation(0, "r1", [message(5, "r1", tx())])
    second = invocation(2000, "r2", [message(2005, "r2", tx())])
    data = b"".join(gzip.compress("".join(r + "\n\n" for r in part).encode(), mtime=0) for part in (first, second))
    (tmp_path / "two-members.gz").write_bytes(data)
    assert read_logs(tmp_path).transactions.height == 2


def test_truncated_gzip_keeps_its_readable_prefix(tmp_path):
    records = []
    for i in range(40):
        records += invocation(i * 1000, f"r{i}", [message(i * 1000 + 5, f"r{i}", tx())])
    path = write_log(tmp_path / "cut.gz", records)
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) * 2 // 3])
    parsed = read_logs(tmp_path)
    row = status(parsed, "cut.gz")
    assert row["status"] == "read" and row["truncated"] and "truncated" in row["reason"]
    assert 10 < parsed.transactions.height < 40
    seen = parsed.reconciliation()
    assert seen["transaction_blocks_seen"] == seen["transactions"] + seen["rejected_blocks"]


def test_invalid_utf8_is_replaced_and_counted_and_crlf_handled(tmp_path):
    records = invocation(0, "r1", [message(5, "r1", tx(action="CAF\udce9"))])
    text = "".join(r + "\r\n\r\n" for r in records)
    (tmp_path / "latin.log").write_bytes(text.encode("utf-8", errors="surrogateescape"))
    parsed = read_logs(tmp_path)
    assert status(parsed, "latin.log")["invalidUtf8"] == 1
    t = parsed.transactions.row(0, named=True)
    assert t["action"] == "CAF\ufffd" and not t["id"].endswith("\r")


def test_a_multi_megabyte_line_is_an_error_record_not_a_crash(tmp_path):
    records = invocation(0, "r1", [message(5, "r1", tx())])
    records.insert(2, app(3, "r1", "x" * 3_000_000))
    write_log(tmp_path / "long.log", records, compress=False)
    parsed = read_logs(tmp_path, ReadLimits(max_line_bytes=1_000_000))
    assert parsed.transactions.height == 1
    reject = parsed.rejects.row(0, named=True)
    assert reject["kind"] == "oversized_line" and reject["sourceFile"] == "long.log" and reject["line"] == 5
    assert "1 line(s) over" in status(parsed, "long.log")["reason"]


def test_gzip_bomb_is_refused_per_file_and_per_run(tmp_path):
    bomb = tmp_path / "bomb.gz"
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb.write_bytes(comp.compress(b"2024-01-10T08:00:00.000Z START RequestId: r Version: $LATEST\n\n" * 200_000)
                     + comp.flush())
    simple_log(tmp_path, [tx()], name="good/000000.gz")
    parsed = read_logs(tmp_path, ReadLimits(max_file_bytes=1_000_000))
    row = status(parsed, "bomb.gz")
    assert row["status"] == "refused" and "per-file cap" in row["reason"]
    assert parsed.transactions.height == 1  # the rest of the run goes on
    run_capped = read_logs(tmp_path, ReadLimits(max_run_bytes=2_000_000))
    assert "run's decompression cap" in status(run_capped, "bomb.gz")["reason"]


def test_reading_streams_memory_does_not_follow_the_bytes(tmp_path):
    """10 MB of framing records keep nothing: peak memory stays a small fraction of the input."""
    line = b"2024-01-10T08:00:00.000Z START RequestId: r Version: $LATEST\n\n"
    comp = zlib.compressobj(6, zlib.DEFLATED, 31)
    with open(tmp_path / "big.gz", "wb") as fh:
        for _ in range(10):
            fh.write(comp.compress(line * (1_000_000 // len(line))))
        fh.write(comp.flush())
    tracemalloc.start()
    parsed = read_logs(tmp_path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert status(parsed, "big.gz")["decompressedBytes"] > 9_900_000
    assert peak < 3_000_000, f"peak {peak:,} bytes"


@pytest.mark.parametrize("body, reason", [
    ("Start syncing the balance {\n  transaction: {\n    id: 'T1',\n    amount: 5,\n", "not closed"),
    (start_syncing({"id": "T2", "userId": "u", "currency": "BHD", "amount": Raw("abc"), "oldBalance": Raw("1")}),
     "amount is not a usable number"),
    (start_syncing({"id": "T3", "userId": "u", "currency": "BHD", "amount": Raw("5")}), "oldBalance"),
])
def test_an_unreadable_block_is_a_reject_with_file_line_and_reason(tmp_path, body, reason):
    records = invocation(0, "r1", [[app(5, "r1", "Processing message m1"), app(6, "r1", body)]])
    write_log(tmp_path / "bad.log", records, compress=False)
    parsed = read_logs(tmp_path)
    reject = parsed.rejects.row(0, named=True)
    assert (reject["sourceFile"], reject["line"], reject["kind"]) == ("bad.log", 5, "transaction_block")
    assert reason in reject["reason"]
    assert parsed.reconciliation()["rejected_blocks"] == 1 and parsed.transactions.height == 0


@pytest.mark.parametrize("body, reason", [
    (start_syncing({"id": "T4", "userId": Raw("'\\u{FFFFFFFFFFFFFFFFFFFF}'"), "currency": "BHD", "amount": Raw("5"),
                    "oldBalance": Raw("1")}), "bad \\u escape"),
    (start_syncing({"id": "T5", "userId": "u", "currency": "BHD", "amount": Raw("5"), "oldBalance": Raw("1")}),
     "not a valid date and time"),
])
def test_hostile_escapes_and_impossible_dates_are_rejects_not_crashes(tmp_path, body, reason):
    stamp = "2024-02-30T10:00:00.000Z" if "T5" in body else "2024-01-10T08:00:00.006Z"
    records = invocation(0, "r1", [[app(5, "r1", "Processing message m1"), f"{stamp} {stamp}\tr1\tINFO\t{body}"]])
    write_log(tmp_path / "bad.log", records, compress=False)
    parsed = read_logs(tmp_path)
    assert parsed.transactions.height == 0 and reason in parsed.rejects["reason"][0]


def test_a_file_dropped_twice_with_a_bad_block_still_reconciles(tmp_path):
    records = invocation(0, "r1", [[app(5, "r1", "Processing message m1"), app(6, "r1", "Start syncing the balance {")]])
    write_log(tmp_path / "a" / "bad.log", records, compress=False)
    write_log(tmp_path / "b" / "bad.log", records, compress=False)
    r = read_logs(tmp_path).reconciliation()
    assert r["transaction_blocks_seen"] == 2 and r["rejected_blocks"] == 1 and r["duplicate_blocks_collapsed"] == 1


def test_a_folder_that_cannot_be_listed_is_reported(tmp_path, monkeypatch):
    simple_log(tmp_path, [tx()], name="ok/000000.gz")
    (tmp_path / "locked").mkdir()
    real_scandir = os.scandir

    def scandir(path="."):
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    parsed = read_logs(tmp_path)
    reasons = dict(zip(parsed.files["path"], parsed.files["reason"]))
    assert reasons["locked"] == "folder cannot be read: Permission denied"
    assert parsed.transactions.height == 1


def test_an_unreadable_folder_is_reported_even_when_it_comes_last(tmp_path, monkeypatch):
    simple_log(tmp_path, [tx()], name="a-ok/000000.gz")
    (tmp_path / "z-locked").mkdir()
    real_scandir = os.scandir

    def scandir(path="."):
        if str(path).endswith("z-locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    parsed = read_logs(tmp_path)
    assert dict(zip(parsed.files["path"], parsed.files["reason"]))["z-locked"] == \
        "folder cannot be read: Permission denied"
