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
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from calo_assets.settings import ReadLimits

GZIP_MAGIC = b"\x1f\x8b"
CHUNK = 256 * 1024
JUNK_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}


class LimitExceeded(Exception):
    """Decompression went past a configured cap."""


class NotALog(Exception):
    """The content is binary, not text."""


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


def junk_reason(relative: str) -> str | None:
    """Why a path is not a log, judged by its name alone (the sensor uses this too)."""
    name = relative.rsplit("/", 1)[-1]
    if name in JUNK_NAMES:
        return f"{name} is operating-system metadata, not a log"
    if name.startswith("._") or relative.startswith("__MACOSX/") or "/__MACOSX/" in relative:
        return "macOS resource fork (__MACOSX / ._ file), not a log"
    return None


def walk(root: Path) -> Iterator[tuple[Path, str, str | None]]:
    """Yield (path, relative name, skip reason or None) for every file under root, sorted.

    Symlinks are read only when they stay inside the input folder; folders that
    are symlinks are never descended (their target, when inside, is walked anyway).
    """
    root = root.resolve()
    unreadable: list[OSError] = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable.append):
        while unreadable:  # a folder os.walk could not list: said, not silently passed over
            err = unreadable.pop()
            where = Path(err.filename or dirpath)
            yield where, where.relative_to(root).as_posix(), f"folder cannot be read: {err.strerror or err}"
        dirnames.sort()
        here = Path(dirpath)
        for d in list(dirnames):
            if (here / d).is_symlink():
                dirnames.remove(d)
                rel = (here / d).relative_to(root).as_posix()
                yield here / d, rel, "symlinked folder not followed"
        for name in sorted(filenames):
            path = here / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                target = path.resolve()
                if not target.is_relative_to(root):
                    yield path, rel, "symlink pointing outside the input folder, not followed"
                    continue
                if not target.is_file():
                    yield path, rel, "symlink to something that is not a file"
                    continue
            yield path, rel, junk_reason(rel)


def read_lines(
    path: Path, report: FileReport, limits: ReadLimits, budget: RunBudget
) -> Iterator[tuple[int, str | None]]:
    """Stream (line number, text) of one file; text is None for a line over the cap.

    Fills `report` as it goes (sha256 of the bytes as received, truncation,
    invalid UTF-8 count). Raises LimitExceeded when a cap is passed and NotALog
    when the content is binary: the caller must then drop what it took from this file.
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
        yield from _split_lines(chunks, report, limits, budget)
    report.sha256 = digest.hexdigest()


def _gunzip(chunks: Iterator[bytes], report: FileReport, limits: ReadLimits) -> Iterator[bytes]:
    """Decompress every gzip member in turn, never more than the caps allow."""
    decomp = zlib.decompressobj(wbits=31)
    for data in chunks:
        while data:
            if decomp.eof:  # the next member of a concatenated gzip
                decomp = zlib.decompressobj(wbits=31)
            try:
                out = decomp.decompress(data, CHUNK)
            except zlib.error as exc:
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


def _split_lines(
    chunks: Iterator[bytes], report: FileReport, limits: ReadLimits, budget: RunBudget
) -> Iterator[tuple[int, str | None]]:
    buffer = b""
    line_no = 0
    too_long = False  # inside a line already reported as over the cap
    first = True
    for chunk in chunks:
        if first and chunk:
            first = False
            if looks_binary(chunk[:8192]):
                raise NotALog("binary content, not a text log")
        budget.take(len(chunk))
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
