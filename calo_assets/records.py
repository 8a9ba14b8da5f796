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
