"""Stage 1, files: find the log files of a drop and stream their lines, safely.

Gzip is decided by the magic bytes, never by the name; junk (macOS metadata,
binaries, empty files) is skipped with a reason; decompression is bounded per
file and per run so a gzip bomb is refused instead of filling memory; a single
over-long line becomes an error entry instead of a crash. Nothing here knows
what a log record is.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from isal import isal_zlib

from calo_assets.settings import ReadLimits

GZIP_MAGIC = b"\x1f\x8b"
CHUNK = 256 * 1024
#: Decoded text handed on at a time by `read_pieces`: small enough that no whole file sits in Python.
PIECE = 512 * 1024
#: A line that could start a record, in any form the line-by-line framing accepts.
RECORD_START = re.compile(rb"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?Z ")
JUNK_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}


class LimitExceeded(Exception):
    """Decompression went past a configured cap."""


class NotALog(Exception):
    """The content is binary, not text."""


class NeedsFullParser(Exception):
    """The file holds what only the line-by-line reading reads exactly (invalid UTF-8, a very long line)."""


@dataclass
class FileReport:
    """What happened to one file: the DataQuality sheet is a list of these."""

    path: str  # relative to the input folder, POSIX separators
    size: int = 0
    sha256: str = ""
    status: str = "read"  # read | skipped | refused
    reason: str = ""
    gzip: bool = False
    truncated: bool = False
    lines: int = 0
    decompressed_bytes: int = 0
    invalid_utf8: int = 0
    long_lines: list[int] = field(default_factory=list)


@dataclass
class RunBudget:
    """Decompressed bytes left for the whole run, shared by all its files."""

    remaining: int

    def take(self, n: int) -> None:
        self.remaining -= n
        if self.remaining < 0:
            raise LimitExceeded("the run's decompression cap was reached")


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, read a chunk at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def junk_reason(relative: str) -> str | None:
    """Why a path is not a log, judged by its name alone (the sensor uses this too)."""
    name = relative.rsplit("/", 1)[-1]
    if name in JUNK_NAMES:
        return f"{name} is operating-system metadata, not a log"
    if name.startswith("._") or relative.startswith("__MACOSX/") or "/__MACOSX/" in relative:
        return "macOS resource fork (__MACOSX / ._ file), not a log"
    return None


def walk(root: Path) -> Iterator[tuple[Path, str, str | None]]:
    """Yield (path, relative name, skip reason or None) for every file under root, folders first-come, names sorted.

    Symlinks are read only when they stay inside the input folder; folders that
    are symlinks are never descended (their target, when inside, is walked anyway).
    A folder that cannot be listed is yielded with the reason, where its files would be.
    """
    root = root.resolve()
    stack: list[tuple[str, str]] = [(str(root), "")]
    while stack:
        folder, prefix = stack.pop()
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as err:
            yield Path(folder), prefix.rstrip("/"), f"folder cannot be read: {err.strerror or err}"
            continue
        folders, files = [], []
        for entry in entries:
            try:
                is_folder = entry.is_dir()  # a symlink to a folder counts as one, as os.walk counts it
            except OSError:
                is_folder = False
            (folders if is_folder else files).append(entry)
        for entry in folders:
            if entry.is_symlink():
                yield Path(entry.path), prefix + entry.name, "symlinked folder not followed"
        for entry in files:
            yield Path(entry.path), prefix + entry.name, _file_skip(root, entry, prefix + entry.name)
        stack += [(e.path, prefix + e.name + "/") for e in reversed(folders) if not e.is_symlink()]


def _file_skip(root: Path, entry: os.DirEntry, rel: str) -> str | None:
    if entry.is_symlink():
        target = Path(entry.path).resolve()
        if not target.is_relative_to(root):
            return "symlink pointing outside the input folder, not followed"
        if not target.is_file():
            return "symlink to something that is not a file"
    return junk_reason(rel)


def read_chunks(path: Path, report: FileReport, limits: ReadLimits, budget: RunBudget) -> Iterator[bytes]:
    """Stream the decompressed bytes of one file, in chunks of at most CHUNK bytes.

    Fills `report` as it goes (size and sha256 of the bytes as received, gzip,
    truncation). Raises LimitExceeded when a cap is passed and NotALog when the
    content is binary: the caller must then drop what it took from this file.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        first = fh.read(CHUNK)
        report.gzip = first.startswith(GZIP_MAGIC)

        def raw_chunks() -> Iterator[bytes]:
            chunk = first
            while chunk:
                digest.update(chunk)
                report.size += len(chunk)
                yield chunk
                chunk = fh.read(CHUNK)

        chunks = _gunzip(raw_chunks(), report, limits) if report.gzip else raw_chunks()
        for i, chunk in enumerate(c for c in chunks if c):
            if i == 0 and looks_binary(chunk[:8192]):
                raise NotALog("binary content, not a text log")
            budget.take(len(chunk))
            yield chunk
    report.sha256 = digest.hexdigest()


def read_lines(
    path: Path, report: FileReport, limits: ReadLimits, budget: RunBudget
) -> Iterator[tuple[int, str | None]]:
    """Stream (line number, text) of one file; text is None for a line over the cap.

    The line-by-line reading the full parser uses; `read_chunks` says what it checks.
    """
    yield from _split_lines(read_chunks(path, report, limits, budget), report, limits)


def read_pieces(path: Path, report: FileReport, limits: ReadLimits, budget: RunBudget) -> Iterator[tuple[int, str]]:
    """Stream one file's text as (number of the first line, whole lines), for the columnar reader.

    Each piece after the first starts at a line that could start a record, so no
    record is split between pieces. Reads exactly what `read_lines` reads (same
    checks, same caps, the last partial line of a truncated file dropped) and fills
    `report.lines`; raises NeedsFullParser where the two would not read the same:
    invalid UTF-8, or a line longer than `longest_fast_line(limits)` still unfinished.
    """
    longest = longest_fast_line(limits)
    buffer = bytearray()  # grown and cut in place: no copy of the text per chunk
    line_no = 1
    for chunk in read_chunks(path, report, limits, budget):
        buffer += chunk
        if len(buffer) - buffer.rfind(b"\n") - 1 > longest:
            raise NeedsFullParser("a line longer than the columnar reader takes")
        if len(buffer) >= PIECE:
            cut = _record_start(buffer)
            if cut:
                yield line_no, _decode_strict(memoryview(buffer)[:cut])
                line_no += buffer.count(b"\n", 0, cut)
                del buffer[:cut]
    if report.truncated:  # the last partial line of a truncated file is not trusted
        del buffer[buffer.rfind(b"\n") + 1:]
    if buffer:
        yield line_no, _decode_strict(memoryview(buffer))
    report.lines = line_no - 1 + buffer.count(b"\n") + (0 if not buffer or buffer.endswith(b"\n") else 1)


def longest_fast_line(limits: ReadLimits) -> int:
    """Lines up to this many bytes are read the same by both readers whatever the chunking."""
    return max(limits.max_line_bytes - CHUNK, 0)


def _record_start(buffer: bytearray) -> int:
    """The offset of the last line in `buffer` (not the first) that could start a record; 0 if none."""
    end = len(buffer)
    while (newline := buffer.rfind(b"\n", 0, end)) >= 0:
        if RECORD_START.match(buffer, newline + 1):
            return newline + 1
        end = newline
    return 0


def _decode_strict(raw: memoryview) -> str:
    try:
        return str(raw, "utf-8")
    except UnicodeDecodeError:
        raise NeedsFullParser("invalid UTF-8") from None


def _gunzip(chunks: Iterator[bytes], report: FileReport, limits: ReadLimits) -> Iterator[bytes]:
    """Decompress every gzip member in turn, never more than the caps allow."""
    decomp = isal_zlib.decompressobj(wbits=31)
    for data in chunks:
        while data:
            if decomp.eof:  # the next member of a concatenated gzip
                decomp = isal_zlib.decompressobj(wbits=31)
            try:
                out = decomp.decompress(data, CHUNK)
            except isal_zlib.error as exc:
                report.truncated = True
                report.reason = f"gzip data is corrupt ({exc}); kept what was readable"
                return
            _count(report, len(out), limits)
            yield out
            data = decomp.unconsumed_tail or (decomp.unused_data if decomp.eof else b"")
    if not decomp.eof:
        report.truncated = True
        report.reason = "gzip stream ends early (truncated file); kept the readable part"


def _count(report: FileReport, n: int, limits: ReadLimits) -> None:
    report.decompressed_bytes += n
    if report.decompressed_bytes > limits.max_file_bytes:
        raise LimitExceeded(
            f"decompresses to more than {limits.max_file_bytes:,} bytes (the per-file cap); "
            "refused as a possible gzip bomb"
        )


def _split_lines(chunks: Iterator[bytes], report: FileReport, limits: ReadLimits) -> Iterator[tuple[int, str | None]]:
    buffer = b""
    line_no = 0
    too_long = False  # inside a line already reported as over the cap
    for chunk in chunks:
        *complete, rest = (buffer + chunk).split(b"\n")
        for raw in complete:
            if too_long:  # the tail of a line already reported as over the cap
                too_long = False
                continue
            line_no += 1
            yield line_no, _decode(raw, report)
        buffer = b"" if too_long else rest
        if len(buffer) > limits.max_line_bytes:
            line_no += 1
            report.long_lines.append(line_no)
            yield line_no, None
            buffer, too_long = b"", True
    # The last partial line of a truncated file is not trusted.
    if buffer and not too_long and not report.truncated:
        line_no += 1
        yield line_no, _decode(buffer, report)
    report.lines = line_no


def _decode(raw: bytes, report: FileReport) -> str:
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("utf-8", errors="replace")
        report.invalid_utf8 += text.count("\ufffd") - raw.decode("utf-8", errors="ignore").count("\ufffd")
        return text


def looks_binary(sample: bytes) -> bool:
    """A NUL byte or mostly undecodable bytes in the first kilobytes: not a text log."""
    if b"\x00" in sample:
        return True
    text = sample.decode("utf-8", errors="replace")
    return text.count("\ufffd") > max(8, len(text) // 20)
