"""Stage 2, records: frame a file's lines into CloudWatch log records.

A record starts at column 0 with an ISO timestamp; lines without one continue
the record above (object bodies, stack traces, the XRAY line after REPORT).
Three kinds: platform (INIT_START, START, END, REPORT, INIT_REPORT, runtime errors), metric
(embedded-metric JSON) and application (timestamp twice, request id, level,
message). Anything else is kept as `unrecognised`, never dropped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import polars as pl

TIMESTAMP = re.compile(r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?Z) ")
APPLICATION = re.compile(
    r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?Z)\t([^\t]*)\t([A-Z]+)\t?(.*)", re.S
)
PLATFORM_WORDS = ("INIT_START", "START", "END", "REPORT", "INIT_REPORT", "INIT_RUNTIME_DONE", "EXTENSION")
#: What the Lambda runtime logs when the function dies before logging anything itself.
RUNTIME_ERROR = "Unknown application error occurred"
REQUEST_ID = re.compile(r"RequestId: ([0-9a-fA-F-]+)")
REPORT_FIELDS = re.compile(r"(Duration|Billed Duration|Memory Size|Max Memory Used|Init Duration): ([\d.]+)")
INIT_FIELDS = re.compile(r"(Phase|Status|Error Type|Init Duration): ([^\t]+)")


@dataclass
class Record:
    """One framed record with where it came from."""

    kind: str  # platform | metric | application | unrecognised | oversized
    line: int  # first line of the record in its file
    timestamp: str
    request_id: str = ""
    level: str = ""
    name: str = ""  # platform word (START, REPORT, ...) for platform records
    text: str = ""  # the message with its continuation lines, "\n"-joined
    end_line: int = 0

    @property
    def fields(self) -> dict[str, str]:
        """Key/value pairs of a REPORT or INIT_REPORT record (durations, memory, error type)."""
        pattern = REPORT_FIELDS if self.name == "REPORT" else INIT_FIELDS
        return {k: v.strip() for k, v in pattern.findall(self.text)}


def frame_records(lines: Iterable[tuple[int, str | None]]) -> Iterator[Record]:
    """Group numbered lines into records. A None line (over the length cap) is its own record."""
    head: tuple[int, str] | None = None
    body: list[str] = []
    for line_no, text in lines:
        if text is None:
            if head:
                yield _make(head, body)
                head, body = None, []
            yield Record(kind="oversized", line=line_no, timestamp="", end_line=line_no,
                         text="line longer than the configured cap; skipped")
            continue
        if TIMESTAMP.match(text):
            if head:
                yield _make(head, body)
            head, body = (line_no, text), []
        elif head is None:
            if text.strip():
                yield Record(kind="unrecognised", line=line_no, timestamp="", text=text, end_line=line_no)
            continue
        else:
            body.append(text)
    if head:
        yield _make(head, body)


def _make(head: tuple[int, str], body: list[str]) -> Record:
    line_no, first = head
    while body and not body[-1].strip():
        body.pop()  # the blank line that separates records
    timestamp, rest = first.split(" ", 1)
    text = "\n".join([rest, *body]) if body else rest
    end_line = line_no + len(body)
    app = APPLICATION.match(text)
    if app:
        return Record("application", line_no, timestamp, request_id=app.group(2),
                      level=app.group(3), text=app.group(4), end_line=end_line)
    if text.startswith("{"):
        return Record("metric", line_no, timestamp, text=text, end_line=end_line)
    word = text.split(" ", 1)[0].split("\t", 1)[0]
    if word in PLATFORM_WORDS:
        match = REQUEST_ID.search(text)
        return Record("platform", line_no, timestamp, request_id=match.group(1) if match else "",
                      name=word, text=text, end_line=end_line)
    if text.startswith(RUNTIME_ERROR):
        return Record("platform", line_no, timestamp, name="RUNTIME_ERROR", text=text, end_line=end_line)
    return Record("unrecognised", line_no, timestamp, text=text, end_line=end_line)


# -- the same framing, column-wise -------------------------------------------------------------------

#: A record's first line, as `TIMESTAMP` above, with the plain digits and the millisecond stamp
#: CloudWatch writes. A file with a first line in another form is read by the full parser.
HEAD = r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z "
BEFORE_HEAD = re.compile(rf"\n(?={HEAD})")
ANY_HEAD = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?Z "
#: Blank as Python's str.strip() sees it (Rust's whitespace lacks the four ASCII separators).
SPACE = r"[\s\x1c-\x1f]"
TRAILING_BLANK_LINES = r"(?:\n[[\s\x1c-\x1f]&&[^\n]]*)+$"
#: `APPLICATION` without its message: a record it reads that `APPLICATION_COLUMNS` does not is odd.
ANY_APPLICATION = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?Z\t[^\t]*\t[A-Z]+"
APPLICATION_COLUMNS = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z\t([^\t]*)\t([A-Z]+)\t?"


def split_records(text: str) -> list[str]:
    """Whole lines of text cut before each record's first line (CRLF read as LF, as `read_lines` does)."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").removesuffix("\r")
    return BEFORE_HEAD.split(text)


def frame_table(parts: pl.DataFrame, longest: int) -> tuple[pl.DataFrame, set[int]]:
    """Records of many files at once, as `frame_records` frames them, and the files it cannot vouch for.

    `parts` holds the `split_records` parts of pieces of text in file order:
    `file` (index), `piece` (number), `first_line` (the piece's first line
    number), `text`. Returns one row per record (file, line, end_line, timestamp,
    kind, name, request_id, level, text: the message for application records),
    and the files that hold what only the line-by-line framing reads the same
    way: a first line in another form than CloudWatch's (also inside an
    application record's second time stamp), text before a file's first record,
    a record longer than `longest` bytes. Their records are left out.
    """
    before = pl.col("lines").cum_sum() - pl.col("lines")  # lines of all earlier parts; pieces are runs
    parts = parts.with_columns(lines=pl.col("text").str.count_matches("\n") + 1).with_columns(
        line=pl.col("first_line") + before
        - pl.when(pl.col("piece") != pl.col("piece").shift()).then(before).forward_fill().fill_null(0),
        head=pl.col("text").str.contains(f"^{HEAD}"))
    odd = parts.filter((~pl.col("head") & ~pl.col("text").str.contains(f"^{SPACE}*$"))
                       | pl.col("text").str.contains(f"\n{ANY_HEAD}")
                       | (pl.col("text").str.len_bytes() > longest))
    records = (parts.filter("head")
               .with_columns(text=pl.col("text").str.replace(TRAILING_BLANK_LINES, ""))
               .select("file", "line", end_line=pl.col("line") + pl.col("text").str.count_matches("\n"),
                       timestamp=pl.col("text").str.slice(0, 24), text=pl.col("text").str.slice(25)))
    odd_app = records.filter(pl.col("text").str.contains(ANY_APPLICATION)
                             & ~pl.col("text").str.contains(APPLICATION_COLUMNS))
    odd_files = set(odd["file"].to_list()) | set(odd_app["file"].to_list())
    return _classify(records.filter(~pl.col("file").is_in(list(odd_files)))), odd_files


def _classify(records: pl.DataFrame) -> pl.DataFrame:
    """Kind, platform name, request id, level and message of each framed record, as `_make` decides them.

    Each costly expression is asked only of the records it concerns (a masked text is null).
    """
    text = pl.col("text")
    app = text.str.extract_groups(f"({APPLICATION_COLUMNS})")
    records = records.with_columns(app=app).with_columns(is_app=pl.col("app").struct.field("1").is_not_null())
    other = pl.when(~pl.col("is_app")).then(text)
    records = records.with_columns(word=other.str.extract(r"^([^ \t]*)"))
    platform_word = pl.col("word").is_in(PLATFORM_WORDS)
    runtime_error = other.str.starts_with(RUNTIME_ERROR).fill_null(False)
    metric = other.str.starts_with("{").fill_null(False)
    return records.select(
        "file", "line", "end_line", "timestamp",
        kind=pl.when("is_app").then(pl.lit("application")).when(metric).then(pl.lit("metric"))
        .when(platform_word | runtime_error).then(pl.lit("platform")).otherwise(pl.lit("unrecognised")),
        name=pl.when("is_app").then(pl.lit("")).when(metric).then(pl.lit(""))
        .when(platform_word).then("word").when(runtime_error).then(pl.lit("RUNTIME_ERROR")).otherwise(pl.lit("")),
        request_id=pl.when("is_app").then(pl.col("app").struct.field("2"))
        .otherwise(pl.when(~metric & platform_word).then(text).str.extract(REQUEST_ID.pattern).fill_null("")),
        level=pl.when("is_app").then(pl.col("app").struct.field("3")).otherwise(pl.lit("")),
        text=pl.when("is_app").then(text.str.slice(pl.col("app").struct.field("1").str.len_chars())).otherwise(text))
