"""Reading a drop: files -> records -> events -> combine, fast where it can and exactly always.

Files are read in groups of consecutive files. A group's text goes through the
columnar reader (`records.frame_table`, then `events_columnar`); a file it cannot
vouch for (invalid UTF-8, a very long line, a record's first line in an unusual
form) is read by the line-by-line full parser (`events.FileEvents`), which
gives the same rows for everything else. Groups are independent, so on a large
drop they are read by worker processes, one per core, and put back together in
file order: the result never depends on scheduling.

The run's decompression cap is counted in file order after the groups are read:
from the file that would pass it on, files are read again by the full parser
with what was left of the cap, exactly as a one-by-one reading refuses them.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from multiprocessing import forkserver
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from calo_assets.combine import combine
from calo_assets.events import FileEvents
from calo_assets.events_columnar import read_records
from calo_assets.files import (FileReport, LimitExceeded, NeedsFullParser, NotALog, RunBudget, longest_fast_line,
                               read_lines, read_pieces, walk)
from calo_assets.catalog import FILES, RECORD_COUNTS, TABLES
from calo_assets.parsed import ROW_TABLES, ParsedLogs, with_times
from calo_assets.records import frame_records, frame_table, split_records
from calo_assets.settings import ReadLimits

#: Bytes on disk per group of files: enough text for the columnar reader to pay off, little enough to hold.
GROUP_BYTES = 8 * 1024 * 1024
#: A file with more text than this is read by the full parser, which streams it in constant memory.
LARGEST_COLUMNAR_FILE = 64 * 1024 * 1024
#: Below this many bytes on disk, worker processes cost more than they save.
PARALLEL_BYTES = 24 * 1024 * 1024
UNCOUNTED = sys.maxsize

Entry = tuple[Path, str, str | None]  # path, relative name, why it is skipped (or None)


@dataclass
class FileRead:
    """What happened to one file, and how much of the run's decompression cap it used."""

    report: FileReport
    records: int = 0
    blocks: int = 0
    taken: int = 0


@dataclass
class GroupRead:
    """The rows of a group of files, in file order."""

    files: list[FileRead]
    tables: dict[str, pl.DataFrame]  # transactions, events, rejects, record_counts


def read_logs(root: Path, limits: ReadLimits | None = None, only: set[str] | None = None,
              progress: Callable[[int, int, str], None] | None = None, workers: int | None = None) -> ParsedLogs:
    """Read every log file under `root` (or just the relative paths in `only`).

    `progress(done, total, name)` is called as files are done, for a progress bar.
    `workers`: processes to read with (default: one per core on a large drop, else none).
    """
    limits = limits or ReadLimits()
    entries = [e for e in walk(Path(root)) if only is None or e[1] in only]
    sizes = [_size(path) if not skip else 0 for path, _, skip in entries]
    workers = _workers(sum(sizes)) if workers is None else workers
    groups = _groups(entries, sizes, workers)
    budget = RunBudget(limits.max_run_bytes)
    kept: list[GroupRead] = []
    capped: list[Entry] = []  # from the file the run's cap stops on: read again one by one, as it refuses them
    for number, read in enumerate(_read_groups(groups, limits, workers)):
        keep = 0
        while keep < len(read.files) and read.files[keep].taken <= budget.remaining:
            budget.take(read.files[keep].taken)
            keep += 1
        kept.append(_first_files(read, keep))
        if progress:
            for f in read.files[:keep]:
                progress(sum(len(k.files) for k in kept), len(entries), f.report.path)
        if keep < len(read.files):
            capped = [e for group in groups[number:] for e in group][keep:]
            break
    if capped:
        kept.append(_full_parser_read(capped, limits, budget))
    files = _files_table([f for read in kept for f in read.files])
    tables = {name: pl.concat([read.tables.pop(name) for read in kept] or [_empty(name)], how="vertical",
                              rechunk=False)
              for name in (*(t.name for t in ROW_TABLES), "record_counts")}
    return combine([ParsedLogs(files=files, **tables)])


def _first_files(read: GroupRead, keep: int) -> GroupRead:
    """The group's first `keep` files and their rows."""
    if keep == len(read.files):
        return read
    names = [f.report.path for f in read.files[:keep]]
    return GroupRead(read.files[:keep], {name: frame.filter(pl.col("sourceFile").is_in(names))
                                         for name, frame in read.tables.items()})


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _workers(size: int) -> int:
    return cores() if size >= PARALLEL_BYTES and cores() > 1 else 0


def _groups(entries: list[Entry], sizes: list[int], workers: int) -> list[list[Entry]]:
    """Consecutive files in groups of about GROUP_BYTES on disk, and at least one group per worker."""
    target = min(GROUP_BYTES, -(-sum(sizes) // workers)) if workers > 1 else GROUP_BYTES
    groups: list[list[Entry]] = [[]]
    size = 0
    for entry, entry_size in zip(entries, sizes):
        if groups[-1] and size >= target:
            groups.append([])
            size = 0
        groups[-1].append(entry)
        size += entry_size
    return groups if groups[0] else []


def _read_groups(groups: list[list[Entry]], limits: ReadLimits, workers: int) -> Iterator[GroupRead]:
    if workers <= 1 or len(groups) <= 1:
        return (read_group(group, limits) for group in groups)
    return _in_processes(groups, limits, workers)


def _start_fork_server() -> None:
    """Start the fork server the reader's worker processes come from (once per process).

    Workers come from a fork
    server (a fresh interpreter that preloads this module), never a fork of a
    process whose Polars threads may hold locks; each uses one Polars thread, its
    core: Polars sizes its pool when it is imported, so the fork server starts
    with POLARS_MAX_THREADS=1 in its environment.
    """
    multiprocessing.set_forkserver_preload(["calo_assets.reading"])
    saved = os.environ.get("POLARS_MAX_THREADS")
    os.environ["POLARS_MAX_THREADS"] = "1"
    try:
        forkserver.ensure_running()
    finally:
        if saved is None:
            del os.environ["POLARS_MAX_THREADS"]
        else:
            os.environ["POLARS_MAX_THREADS"] = saved


def _in_processes(groups: list[list[Entry]], limits: ReadLimits, workers: int) -> Iterator[GroupRead]:
    """Groups read by worker processes (see `_start_fork_server`), yielded in group order."""
    _start_fork_server()
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver")) as pool:
        yield from pool.map(read_group, groups, [limits] * len(groups))


def read_group(group: list[Entry], limits: ReadLimits) -> GroupRead:
    """Read consecutive files: the columnar reader for what it vouches for, the full parser for the rest."""
    budget = RunBudget(UNCOUNTED)  # the run's cap is counted by `read_logs`, in file order
    files: list[FileRead] = []
    pieces = _Pieces()
    full: list[int] = []
    for index, (path, rel, skip) in enumerate(group):
        read = FileRead(FileReport(path=rel))
        files.append(read)
        if skip:
            read.report.status, read.report.reason = "skipped", skip
            _stat_into(path, read.report)
            continue
        before = budget.remaining
        try:
            _add_pieces(pieces, path, read.report, limits, budget, index)
        except NeedsFullParser:
            budget.remaining = before
            read.report = FileReport(path=rel)
            full.append(index)
        except NotALog as exc:
            read.report.status, read.report.reason = "skipped", str(exc)
        except LimitExceeded as exc:
            read.report.status, read.report.reason = "refused", str(exc)
        except OSError as exc:
            read.report.status, read.report.reason = "refused", f"cannot be read: {exc.strerror or exc}"
        read.taken = before - budget.remaining
    records, odd = frame_table(pieces.table(without=full), longest_fast_line(limits))
    rows = read_records(records, [f.report.path for f in files])
    full = sorted({*full, *odd})
    for index in odd:
        files[index].report = FileReport(path=files[index].report.path)
    per_file = records.group_by("file").len()
    stats = dict(zip(per_file["file"], per_file["len"]))
    blocks = dict(zip(rows.blocks["file"], rows.blocks["transactionBlocks"]))
    for index, read in enumerate(files):
        if index not in full and read.report.status == "read":
            read.records, read.blocks = stats.get(index, 0), blocks.get(index, 0)
            _no_records(read)
    tables = {"transactions": rows.transactions, "events": rows.events, "rejects": rows.rejects,
              "record_counts": rows.counts.select(pl.col("file").replace_strict(
                  list(range(len(files))), [f.report.path for f in files], return_dtype=pl.String).alias("sourceFile"),
                  "kind", pl.col("count").cast(pl.Int64))}
    unread = [f.report.path for f in files if f.report.status != "read"]
    tables = {name: frame.filter(~pl.col("sourceFile").is_in(unread)) for name, frame in tables.items()}
    if full:
        slow = _full_parser_read([group[i] for i in full], limits, RunBudget(UNCOUNTED))
        for index, read in zip(full, slow.files):
            files[index] = read
        order = {f.report.path: i for i, f in enumerate(files)}
        tables = {name: _in_file_order(pl.concat([frame, slow.tables[name]], how="vertical"), order)
                  for name, frame in tables.items()}
    return GroupRead(files, tables)


def _add_pieces(pieces: _Pieces, path: Path, report: FileReport, limits: ReadLimits, budget: RunBudget,
                index: int) -> None:
    if path.stat().st_size == 0:
        report.status, report.reason = "skipped", "empty file"
        return
    size = 0
    for first_line, text in read_pieces(path, report, limits, budget):
        size += len(text)
        if size > LARGEST_COLUMNAR_FILE:
            raise NeedsFullParser("more text than the columnar reader holds at once")
        pieces.add(index, first_line, text)


class _Pieces:
    """A group's text cut into records, as Polars frames gathered a little at a time (little text waits in Python)."""

    FLUSH = 256 * 1024

    def __init__(self) -> None:
        self.frames: list[pl.DataFrame] = []
        self.columns: tuple[list[int], list[int], list[int], list[str]] = ([], [], [], [])
        self.size = 0
        self.count = 0

    def add(self, file: int, first_line: int, text: str) -> None:
        parts = split_records(text)
        files, pieces, lines, texts = self.columns
        files += [file] * len(parts)
        pieces += [self.count] * len(parts)
        lines += [first_line] * len(parts)
        texts += parts
        self.count += 1
        self.size += len(text)
        if self.size >= self.FLUSH:
            self.flush()

    def flush(self) -> None:
        files, pieces, lines, texts = self.columns
        self.frames.append(pl.DataFrame({"file": files, "piece": pieces, "first_line": lines, "text": texts},
                                        schema={"file": pl.Int64, "piece": pl.Int64, "first_line": pl.Int64,
                                                "text": pl.String}))
        self.columns, self.size = ([], [], [], []), 0

    def table(self, without: list[int]) -> pl.DataFrame:
        """Every part but those of the files in `without` (read by the full parser instead)."""
        self.flush()
        return pl.concat(self.frames).filter(~pl.col("file").is_in(without))


def _in_file_order(frame: pl.DataFrame, order: dict[str, int]) -> pl.DataFrame:
    return frame.sort(pl.col("sourceFile").replace_strict(order, return_dtype=pl.Int64), maintain_order=True)


def _no_records(read: FileRead) -> None:
    if read.report.status == "read" and read.records == 0:
        read.report.status = "skipped"
        read.report.reason = "no log records (no line starts with an ISO timestamp)"


# -- the full parser, file by file ---------------------------------------------------------------------


def _full_parser_read(entries: list[Entry], limits: ReadLimits, budget: RunBudget) -> GroupRead:
    """Read files one by one with the full parser, sharing `budget`."""
    files: list[FileRead] = []
    rows: dict[str, list[dict]] = {t.name: [] for t in ROW_TABLES}
    counts: list[tuple[str, str, int]] = []
    for path, rel, skip in entries:
        read = FileRead(FileReport(path=rel))
        files.append(read)
        if skip:
            read.report.status, read.report.reason = "skipped", skip
            _stat_into(path, read.report)
            continue
        before = budget.remaining
        part = _full_parser_file(path, read, limits, budget)
        read.taken = before - budget.remaining
        if part is not None:
            rows["transactions"] += part.transactions
            rows["events"] += part.events
            rows["rejects"] += part.rejects
            counts += [(rel, kind, n) for kind, n in sorted(part.counts.items())]
    tables = {t.name: with_times(pl.DataFrame(rows[t.name], schema=t.building_schema())) for t in ROW_TABLES}
    tables["record_counts"] = pl.DataFrame(counts, schema=RECORD_COUNTS.schema(), orient="row")
    return GroupRead(files, tables)


def _full_parser_file(path: Path, read: FileRead, limits: ReadLimits, budget: RunBudget) -> FileEvents | None:
    """One file through the full parser; its rows only if it was read whole."""
    report = read.report
    part = FileEvents(report.path)
    try:
        if path.stat().st_size == 0:
            report.status, report.reason = "skipped", "empty file"
        else:
            part.feed(frame_records(read_lines(path, report, limits, budget)))
    except NotALog as exc:
        report.status, report.reason = "skipped", str(exc)
    except LimitExceeded as exc:
        report.status, report.reason = "refused", str(exc)
    except OSError as exc:
        report.status, report.reason = "refused", f"cannot be read: {exc.strerror or exc}"
    read.records, read.blocks = part.records, part.blocks
    _no_records(read)
    if report.status != "read":
        read.records = read.blocks = 0
        return None
    if report.long_lines:
        report.reason = (report.reason + "; " if report.reason else "") + (
            f"{len(report.long_lines)} line(s) over the {limits.max_line_bytes:,}-byte cap skipped")
    return part


def _stat_into(path: Path, report: FileReport) -> None:
    with suppress(OSError):  # a skipped file that vanished keeps size 0
        report.size = path.lstat().st_size


def _files_table(files: list[FileRead]) -> pl.DataFrame:
    return pl.DataFrame(
        [{"path": r.path, "size": r.size, "sha256": r.sha256, "status": r.status, "reason": r.reason,
          "gzip": r.gzip, "truncated": r.truncated, "lines": r.lines, "decompressedBytes": r.decompressed_bytes,
          "invalidUtf8": r.invalid_utf8, "longLines": len(r.long_lines), "records": f.records,
          "transactionBlocks": f.blocks}
         for f in files for r in [f.report]],
        schema=FILES.schema())


def _empty(name: str) -> pl.DataFrame:
    if name == "record_counts":
        return pl.DataFrame(schema=RECORD_COUNTS.schema())
    return pl.DataFrame(schema=TABLES[name].schema())
