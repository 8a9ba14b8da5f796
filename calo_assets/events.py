"""Stage 3, events: turn a drop's records into typed transactions, other events and rejects.

An invocation (one request id) handles several SQS messages in turn; each
`Processing message <uuid>` opens a message, and what the message logs after
its `Start syncing the balance` block is the transaction's outcome. Records of
an invocation are put in time order first: inside a file, lines go back in time.

Every transaction block ends up in `transactions` or in `rejects` with file,
line and a reason; nothing disappears. Money stays exact: numbers are built
from their logged text.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import polars as pl

from calo_assets.files import FileReport, LimitExceeded, NotALog, RunBudget, read_lines, walk
from calo_assets.node_inspect import UNDEFINED, InspectError, JsNumber, Placeholder, parse_inspect
from calo_assets.records import Record, frame_records
from calo_assets.settings import ReadLimits

MONEY = pl.Decimal(38, 18)
#: Money too large for a Decimal(38, 18) column is refused; more than 18 places (float noise
#: such as 1.1368683772161603e-13) is rounded half-up to 18, far below any currency's places.
MAX_MONEY = Decimal(10) ** 20
MONEY_QUANTUM = Decimal(1).scaleb(-18)
TIMESTAMP = pl.Datetime("ms", "UTC")
MONEY_FIELDS = ("amount", "vat", "oldBalance", "newBalance", "paymentBalance")
TRANSACTION_STRINGS = ("id", "type", "source", "action", "userId", "currency", "metadata")
#: From the JSON form, only these fields are kept; names, emails and phone numbers never are.
JSON_FORM_FIELDS = ("paymentMethod", "paymentProvider", "brand", "kitchen")
REQUIRED = ("id", "userId", "currency", "amount", "oldBalance")
OUTCOMES = ("applied", "already_synced", "failed", "refused", "unknown")

PROCESSING = re.compile(r"Processing message (\S+)")
START_SYNC = "Start syncing the balance"
NOT_IN_SYNC = "Subscription balance and payment balance are not in sync"
SYNC_FAILED = "An error occured while syncing the balance"
ALREADY_SYNCED = ("Skipping the process, balance is already synced", "Balance is already synced from other listeners")
REFUSAL = "Subscriber will have a negative balance"
FLAG_FALSE = "Skipping the process, Update Payment Balance Flag is set to false"
LOCK = "Transaction Lock created"

TRANSACTION_SCHEMA = {
    "id": pl.String, "userId": pl.String, "currency": pl.String, "type": pl.String,
    "source": pl.String, "action": pl.String,
    **{name: MONEY for name in MONEY_FIELDS},
    "userBalance": MONEY, "updatePaymentBalance": pl.Boolean, "metadata": pl.String,
    "paymentMethod": pl.String, "paymentProvider": pl.String, "brand": pl.String, "kitchen": pl.String,
    "shape": pl.String, "jsonMerged": pl.Boolean, "outcome": pl.String, "outcomeLine": pl.Int64,
    "sourceFile": pl.String, "line": pl.Int64, "endLine": pl.Int64,
    "requestId": pl.String, "messageId": pl.String, "timestamp": pl.String,
}
EVENT_SCHEMA = {
    "kind": pl.String, "sourceFile": pl.String, "line": pl.Int64, "timestamp": pl.String,
    "requestId": pl.String, "messageId": pl.String, "level": pl.String,
    "userId": pl.String, "transactionId": pl.String, "action": pl.String,
    "subscriptionBalance": MONEY, "paymentBalance": MONEY, "currentBalance": MONEY,
    "metric": pl.String, "durationMs": pl.String, "maxMemoryMb": pl.String, "errorType": pl.String,
    "text": pl.String,
}
REJECT_SCHEMA = {
    "sourceFile": pl.String, "line": pl.Int64, "endLine": pl.Int64, "timestamp": pl.String,
    "requestId": pl.String, "messageId": pl.String, "kind": pl.String, "reason": pl.String,
    "excerpt": pl.String,
}
FILE_SCHEMA = {
    "path": pl.String, "size": pl.Int64, "sha256": pl.String, "status": pl.String, "reason": pl.String,
    "gzip": pl.Boolean, "truncated": pl.Boolean, "lines": pl.Int64, "decompressedBytes": pl.Int64,
    "invalidUtf8": pl.Int64, "longLines": pl.Int64, "records": pl.Int64, "transactionBlocks": pl.Int64,
}
COUNT_SCHEMA = {"sourceFile": pl.String, "kind": pl.String, "count": pl.Int64}
DUPLICATE_SCHEMA = {"table": pl.String, "collapsed": pl.Int64}  # rows collapsed as duplicates, per table
ROW_SCHEMAS = {"transactions": TRANSACTION_SCHEMA, "events": EVENT_SCHEMA, "rejects": REJECT_SCHEMA}
EXCERPT = 300


@dataclass
class ParsedLogs:
    """The output of reading a drop: every table carries file and line of its rows."""

    transactions: pl.DataFrame
    events: pl.DataFrame
    rejects: pl.DataFrame
    files: pl.DataFrame
    record_counts: pl.DataFrame  # sourceFile, kind, count: the records each file holds
    duplicates: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=DUPLICATE_SCHEMA))

    def tables(self) -> dict[str, pl.DataFrame]:
        return {name: getattr(self, name) for name in TABLES}

    @classmethod
    def from_tables(cls, tables: dict[str, pl.DataFrame]) -> ParsedLogs:
        return cls(**{name: tables[name] for name in TABLES})

    @property
    def sync_errors(self) -> pl.DataFrame:
        return self.events.filter(pl.col("kind") == "sync_error")

    def records_by_kind(self) -> dict[str, int]:
        """How many records of each kind the distinct files hold (a duplicate file counts once)."""
        totals = self.record_counts.group_by("kind").agg(pl.col("count").sum()).sort("kind")
        return dict(zip(totals["kind"], totals["count"]))

    def reconciliation(self) -> dict[str, int]:
        """Transaction blocks seen = transactions + rejected blocks + duplicates collapsed."""
        dup = dict(zip(self.duplicates["table"], self.duplicates["collapsed"]))
        block_rejects = self.rejects.filter(pl.col("kind") == "transaction_block").height
        return {
            "transaction_blocks_seen": int(self.files["transactionBlocks"].sum() or 0),
            "transactions": self.transactions.height,
            "rejected_blocks": block_rejects,
            "duplicate_blocks_collapsed": int(dup.get("transactions", 0) + dup.get("rejected_blocks", 0)),
            "json_forms_merged": int(self.transactions["jsonMerged"].sum() or 0),
            "other_rejects": self.rejects.height - block_rejects,
        }


TABLES = ("transactions", "events", "rejects", "files", "record_counts", "duplicates")


def read_logs(root: Path, limits: ReadLimits | None = None, only: set[str] | None = None,
              progress: Callable[[int, int, str], None] | None = None) -> ParsedLogs:
    """Read every log file under `root` (or just the relative paths in `only`).

    `progress(done, total, name)` is called before each file, for a progress bar.
    """
    limits = limits or ReadLimits()
    budget = RunBudget(limits.max_run_bytes)
    sink = _Sink()
    entries = [e for e in walk(Path(root)) if only is None or e[1] in only]
    for done, (path, rel, skip) in enumerate(entries, 1):
        if progress:
            progress(done, len(entries), rel)
        report = FileReport(path=rel)
        if skip:
            report.status, report.reason = "skipped", skip
            _stat_into(path, report)
            sink.files.append((report, 0, 0))
            continue
        _read_file(path, report, limits, budget, sink)
    return sink.finish()


def _stat_into(path: Path, report: FileReport) -> None:
    with suppress(OSError):  # a skipped file that vanished keeps size 0
        report.size = path.lstat().st_size


def _read_file(path: Path, report: FileReport, limits: ReadLimits, budget: RunBudget, sink: _Sink) -> None:
    """Parse one file; what it yields is committed to the sink only if the file was read whole."""
    part = _FileParse(report.path)
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
    if report.status == "read" and part.records == 0:
        report.status = "skipped"
        report.reason = "no log records (no line starts with an ISO timestamp)"
    if report.status != "read":
        sink.files.append((report, 0, 0))
        return
    if report.long_lines:
        report.reason = (report.reason + "; " if report.reason else "") + (
            f"{len(report.long_lines)} line(s) over the {limits.max_line_bytes:,}-byte cap skipped")
    sink.commit(part, report)


class _Sink:
    """Collects the rows of all files as Polars frames, a batch at a time.

    Rows wait as Python dicts only until a batch is full: a dict row costs ten
    times its frame row, and a run can hold millions of them.
    """

    BATCH = 50_000

    def __init__(self) -> None:
        self.rows: dict[str, list[dict]] = {name: [] for name in ROW_SCHEMAS}
        self.frames: dict[str, list[pl.DataFrame]] = {name: [] for name in ROW_SCHEMAS}
        self.files: list[tuple[FileReport, int, int]] = []
        self.counts: list[tuple[str, str, int]] = []

    def commit(self, part: _FileParse, report: FileReport) -> None:
        for name, rows in (("transactions", part.transactions), ("events", part.events), ("rejects", part.rejects)):
            self.rows[name] += rows
            if len(self.rows[name]) >= self.BATCH:
                self.flush(name)
        self.counts += [(report.path, kind, n) for kind, n in sorted(part.counts.items())]
        self.files.append((report, part.records, part.blocks))

    def flush(self, name: str) -> None:
        self.frames[name].append(_with_times(pl.DataFrame(self.rows[name], schema=ROW_SCHEMAS[name])))
        self.rows[name] = []

    def table(self, name: str) -> pl.DataFrame:
        self.flush(name)
        return pl.concat(self.frames.pop(name), how="vertical", rechunk=True)

    def finish(self) -> ParsedLogs:
        files = pl.DataFrame(
            [{"path": r.path, "size": r.size, "sha256": r.sha256, "status": r.status, "reason": r.reason,
              "gzip": r.gzip, "truncated": r.truncated, "lines": r.lines,
              "decompressedBytes": r.decompressed_bytes, "invalidUtf8": r.invalid_utf8,
              "longLines": len(r.long_lines), "records": records, "transactionBlocks": blocks}
             for r, records, blocks in self.files],
            schema=FILE_SCHEMA,
        )
        counts = pl.DataFrame(self.counts, schema=COUNT_SCHEMA, orient="row")
        tables = {name: self.table(name) for name in ROW_SCHEMAS}
        return combine([ParsedLogs(files=files, record_counts=counts, **tables)])


def _with_times(frame: pl.DataFrame) -> pl.DataFrame:
    """Log timestamps as UTC datetimes (millisecond precision, as CloudWatch logs them)."""
    return frame.with_columns(
        pl.col("timestamp").str.to_datetime("%Y-%m-%dT%H:%M:%S%.fZ", time_unit="ms", time_zone="UTC", strict=False)
    )


class _FileParse:
    """The rows one file yields; kept apart until the file is known to be readable."""

    def __init__(self, source: str):
        self.source = source
        self.transactions: list[dict] = []
        self.events: list[dict] = []
        self.rejects: list[dict] = []
        self.counts: Counter[str] = Counter()
        self.records = 0
        self.blocks = 0

    def feed(self, records) -> None:
        invocations: dict[str, list[Record]] = defaultdict(list)
        for record in records:
            self.records += bool(record.timestamp)  # stray text lines alone do not make a log
            if record.kind == "application" and record.request_id not in ("", "undefined"):
                invocations[record.request_id].append(record)
            else:
                self.standalone(record)
        for request_id, recs in invocations.items():
            recs.sort(key=lambda r: (r.timestamp, r.line))
            self.invocation(request_id, recs)

    # -- records outside an invocation's messages -------------------------------------------

    def standalone(self, record: Record) -> None:
        if record.kind == "platform":
            self.count(f"platform:{record.name}")
            fields = record.fields
            if record.name in ("START", "END"):
                return  # framing only; their counts are in record_counts
            self.event(record, record.name.lower(), durationMs=fields.get("Duration") or fields.get("Init Duration"),
                       maxMemoryMb=fields.get("Max Memory Used"), errorType=fields.get("Error Type"))
        elif record.kind == "metric":
            self.count("metric")
            self.metric(record)
        elif record.kind == "application":  # request id `undefined`: an uncaught exception
            self.count("application:crash")
            self.event(record, _crash_kind(record.text), errorType=_error_type(record.text))
        elif record.kind == "oversized":
            self.count("oversized")
            self.reject(record, "oversized_line", record.text)
        else:
            self.count("unrecognised")
            self.event(record, "unrecognised")

    def metric(self, record: Record) -> None:
        try:
            data = json.loads(record.text)
            names = [m["Name"] for d in data["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]]
        except (ValueError, KeyError, TypeError):
            self.event(record, "unrecognised")
            return
        self.event(record, "metric", metric=",".join(names), userId=_text(data.get("userId")),
                   action=_text(data.get("action")))

    # -- one invocation, message by message ---------------------------------------------------

    def invocation(self, request_id: str, records: list[Record]) -> None:
        message_id = ""
        message: list[Record] = []
        for record in records:
            found = PROCESSING.match(record.text)
            if found:
                self.message(message_id, message)
                message_id, message = found.group(1), []
                self.count("application:processing_message")
            else:
                message.append(record)
        self.message(message_id, message)

    def message(self, message_id: str, records: list[Record]) -> None:
        pending_json: dict[str, tuple[Record, dict]] = {}
        current: dict | None = None  # the message's transaction the next outcome belongs to
        in_message: dict[str, dict] = {}
        for record in records:
            text = record.text
            if text.startswith(START_SYNC):
                self.count("application:start_syncing")
                self.blocks += 1
                tx = self.transaction(record, message_id, pending_json)
                if tx is not None:
                    current = tx
                    in_message[tx["id"]] = tx
            elif text.startswith("transaction {") or text.startswith("transaction{"):
                self.count("application:transaction_json")
                self.json_form(record, message_id, pending_json, in_message)
            elif text.startswith("SubscriptionBalanceUpdated event published"):
                self.count("application:event_published")
                self.outcome(current, "applied", record)
            elif text.startswith(ALREADY_SYNCED):
                self.count("application:already_synced")
                self.outcome(current, "already_synced", record)
            elif text.startswith(SYNC_FAILED):
                self.count("application:sync_failed")
                self.outcome(current, "failed", record)
                self.event(record, "sync_failed", messageId=message_id, errorType=_error_type(text),
                           transactionId=current and current["id"], userId=current and current["userId"])
            elif text.startswith(NOT_IN_SYNC):
                self.count("application:not_in_sync")
                self.sync_error(record, message_id, current)
            elif REFUSAL in text and text.lstrip().startswith("{"):
                self.count("application:refusal")
                self.refusal(record, message_id, in_message)
            else:
                self.other(record, message_id)
        for record, _ in pending_json.values():
            self.reject(record, "json_transaction",
                        "JSON-form transaction with no `Start syncing the balance` block of the same id "
                        "in its message; kept here so it is not lost", messageId=message_id)

    def transaction(self, record: Record, message_id: str, pending_json: dict) -> dict | None:
        try:
            obj = parse_inspect(record.text[len(START_SYNC):])
            if not isinstance(obj, dict) or not isinstance(obj.get("transaction"), dict):
                raise ValueError("the object has no `transaction` member")
            tx = _transaction_row(obj["transaction"])
            _check_timestamp(record.timestamp)
        except (InspectError, ValueError) as exc:
            reason = f"unreadable transaction block: {exc}"
            if not record.text.rstrip().endswith("}"):
                reason += " (the block is cut short: the file may be truncated here)"
            self.reject(record, "transaction_block", reason, messageId=message_id)
            return None
        tx.update(jsonMerged=False, outcome="unknown", outcomeLine=None, **self.provenance(record, message_id))
        json_form = pending_json.pop(tx["id"], None)
        if json_form:
            _merge_json_form(tx, json_form[1])
        self.transactions.append(tx)
        return tx

    def json_form(self, record: Record, message_id: str, pending_json: dict, in_message: dict[str, dict]) -> None:
        body = record.text.split("transaction", 1)[1]
        try:
            obj = parse_inspect(body)
            if not isinstance(obj, dict) or not isinstance(obj.get("id"), str):
                raise ValueError("no transaction id")
        except (InspectError, ValueError) as exc:
            self.reject(record, "json_transaction", f"unreadable JSON-form transaction: {exc}", messageId=message_id)
            return
        kept = {k: obj.get(k) for k in (*JSON_FORM_FIELDS, "userBalance")}
        if obj["id"] in in_message:  # logged after its block (in time order): merge now
            _merge_json_form(in_message[obj["id"]], kept)
        else:
            pending_json[obj["id"]] = (record, kept)

    def outcome(self, tx: dict | None, outcome: str, record: Record) -> None:
        if tx is not None and tx["outcome"] == "unknown":
            tx["outcome"], tx["outcomeLine"] = outcome, record.line

    def sync_error(self, record: Record, message_id: str, current: dict | None) -> None:
        body = record.text[len(NOT_IN_SYNC):]
        try:
            obj = parse_inspect(body)
        except InspectError as exc:
            self.reject(record, "sync_error", f"unreadable not-in-sync object: {exc}", messageId=message_id)
            return
        obj = obj if isinstance(obj, dict) else {}
        self.event(record, "sync_error", messageId=message_id, level=record.level,
                   userId=_text(obj.get("userId")), transactionId=current and current["id"],
                   subscriptionBalance=_money(obj.get("subscriptionBalance"), "subscriptionBalance", strict=False),
                   paymentBalance=_money(obj.get("paymentBalance"), "paymentBalance", strict=False))

    def refusal(self, record: Record, message_id: str, in_message: dict[str, dict]) -> None:
        try:
            obj = parse_inspect(record.text)
            data = obj.get("data") if isinstance(obj, dict) else None
            data = data if isinstance(data, dict) else {}
        except InspectError as exc:
            self.reject(record, "refusal", f"unreadable refusal object: {exc}", messageId=message_id)
            return
        tx_id = _text(data.get("transactionId"))
        tx = in_message.get(tx_id or "")
        if tx is not None:
            tx["outcome"], tx["outcomeLine"] = "refused", record.line
        self.event(record, "refusal", messageId=message_id, userId=_text(data.get("userId")), transactionId=tx_id,
                   currentBalance=_money(data.get("currentBalance"), "currentBalance", strict=False),
                   errorType=None if tx else "no transaction block for this id in the message")

    def other(self, record: Record, message_id: str) -> None:
        text = record.text
        if text.startswith("Skipping the balance sync for create"):
            kind, action = "skip_create_subscription", None
        elif text.startswith(FLAG_FALSE):
            kind, action = "skip_payment_flag_false", _inline_value(text, "transactionAction")
        elif text.startswith(LOCK):
            kind, action = "transaction_lock", None
        elif text.startswith("Sending slack notification"):
            kind, action = "slack_notification", None
        elif text.startswith("record"):
            kind, action = "sqs_record", None
        elif text.startswith(("Uncaught Exception", "Invoke Error")):
            kind, action = _crash_kind(text), None
        else:
            kind, action = f"other_{record.level.lower() or 'info'}", None
        self.count(f"application:{kind}")
        self.event(record, kind, messageId=message_id, action=action,
                   errorType=_error_type(text) if kind.startswith(("crash", "invoke")) else None,
                   userId=_inline_value(text, "userId"))

    # -- rows --------------------------------------------------------------------------------

    def count(self, kind: str) -> None:
        self.counts[kind] += 1

    def provenance(self, record: Record, message_id: str) -> dict:
        return {"sourceFile": self.source, "line": record.line, "endLine": record.end_line,
                "requestId": record.request_id, "messageId": message_id, "timestamp": record.timestamp}

    def event(self, record: Record, kind: str, messageId: str = "", **values) -> None:
        row = dict.fromkeys(EVENT_SCHEMA)
        row.update(kind=kind, sourceFile=self.source, line=record.line, timestamp=record.timestamp or None,
                   requestId=record.request_id, messageId=messageId, level=record.level or None,
                   text=record.text[:EXCERPT])
        row.update({k: v for k, v in values.items() if v is not None})
        self.events.append(row)

    def reject(self, record: Record, kind: str, reason: str, messageId: str = "") -> None:
        self.rejects.append({"sourceFile": self.source, "line": record.line, "endLine": record.end_line,
                             "timestamp": record.timestamp or None, "requestId": record.request_id,
                             "messageId": messageId, "kind": kind, "reason": reason,
                             "excerpt": record.text[:EXCERPT]})


def _transaction_row(obj: dict) -> dict:
    """Typed transaction fields from the parsed object; ValueError says what is wrong."""
    missing = [k for k in REQUIRED if k not in obj or _is_absent(obj[k])]
    if missing:
        raise ValueError(f"required field(s) missing: {', '.join(missing)}")
    row: dict = {}
    for key in TRANSACTION_STRINGS:
        value = obj.get(key)
        if value is not None and not _is_absent(value) and not isinstance(value, str):
            raise ValueError(f"{key} should be text, got {_describe(value)}")
        row[key] = None if _is_absent(value) else value
    for key in MONEY_FIELDS:
        row[key] = _money(obj.get(key), key)
    if row["type"] is not None and row["type"] not in ("DEBIT", "CREDIT"):
        raise ValueError(f"type {row['type']!r} is neither DEBIT nor CREDIT")
    flag = obj.get("updatePaymentBalance")
    row["updatePaymentBalance"] = flag if isinstance(flag, bool) else None
    row["shape"] = "typed" if row["type"] is not None else "old"  # `type: undefined` is no type either
    return row


def _merge_json_form(tx: dict, fields: dict) -> None:
    """The JSON form adds payment details (never personal fields) to its block's transaction."""
    for key in JSON_FORM_FIELDS:
        tx[key] = _text(fields.get(key))
    tx["userBalance"] = _money(fields.get("userBalance"), "userBalance", strict=False)
    tx["jsonMerged"] = True


def _check_timestamp(text: str) -> None:
    """A block's log timestamp must be a real instant: it orders the user's chain."""
    try:
        datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"log timestamp {text!r} is not a valid date and time") from None


def _is_absent(value) -> bool:
    """`undefined`, `null` and `[Object]`-style placeholders carry no value; a bare word does."""
    return value is None or value is UNDEFINED or (isinstance(value, Placeholder) and value.text.startswith("["))


def _money(value, name: str, strict: bool = True) -> Decimal | None:
    """A logged number as an exact Decimal (at most 18 places kept); None when absent."""
    if _is_absent(value):
        return None
    if isinstance(value, JsNumber):
        number = value.decimal()
    elif isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except ArithmeticError:
            number = None
    else:
        number = None
    if number is None or not number.is_finite() or abs(number) >= MAX_MONEY:
        if strict:
            raise ValueError(f"{name} is not a usable number: {_describe(value)}")
        return None
    if number.as_tuple().exponent < -18:
        number = number.quantize(MONEY_QUANTUM, rounding=ROUND_HALF_UP)
    return number


def _describe(value) -> str:
    return repr(value.text if isinstance(value, JsNumber) else value)[:60]


def _text(value) -> str | None:
    return value if isinstance(value, str) else None


_INLINE: dict[str, re.Pattern] = {}


def _inline_value(text: str, key: str) -> str | None:
    """A `key: 'value'` from a one-line object, without parsing the whole record."""
    pattern = _INLINE.setdefault(key, re.compile(rf"""\b{key}:\s*['"]([^'"]*)['"]"""))
    found = pattern.search(text)
    return found.group(1) if found else None


def _crash_kind(text: str) -> str:
    return "invoke_error" if text.startswith("Invoke Error") else "crash"


def _error_type(text: str) -> str | None:
    found = re.search(r'"errorType":"([^"]+)"|(\w*Error):', text)
    return (found.group(1) or found.group(2)) if found else None


def combine(parts: list[ParsedLogs]) -> ParsedLogs:
    """Put several reads together (drops of the same export) and collapse exact duplicates.

    A file whose bytes were already read (the same file dropped twice) is marked
    `duplicate` and its rows are left out: only that read's rows, so an earlier
    file of the same name with other bytes keeps its own. A record seen twice in
    different files (overlapping exports) has the same request id, message id,
    transaction id and timestamp: it is kept once. Records without a request id
    (INIT_START, metrics) are never collapsed, since two Lambda instances can log
    those in the same millisecond. How many rows were collapsed is reported per
    table, and rejected transaction blocks apart (`rejected_blocks`), so the
    blocks seen still reconcile.
    """
    seen: dict[str, str] = {}  # sha256 -> the path first read with those bytes
    marked: list[pl.DataFrame] = []
    fresh: dict[str, list[pl.DataFrame]] = {name: [] for name in (*DEDUPE_KEYS, "record_counts")}
    for part in parts:
        originals = []
        for path, sha, status in part.files.select("path", "sha256", "status").iter_rows():
            originals.append(seen.setdefault(sha, path) if status == "read" else None)
        files = part.files.with_columns(pl.Series("original", originals, dtype=pl.String)).with_columns(
            status=pl.when(pl.col("original").is_not_null() & (pl.col("original") != pl.col("path")))
            .then(pl.lit("duplicate")).otherwise(pl.col("status")))
        files = files.with_columns(reason=pl.when(pl.col("status") == "duplicate")
                                   .then(pl.lit("same bytes as ") + pl.col("original") + pl.lit("; counted once"))
                                   .otherwise(pl.col("reason"))).drop("original")
        marked.append(files)
        repeated = files.filter(pl.col("status") == "duplicate")["path"].implode()
        for name in fresh:
            fresh[name].append(getattr(part, name).filter(~pl.col("sourceFile").is_in(repeated)))
    earlier = pl.concat([p.duplicates for p in parts]).group_by("table").agg(pl.col("collapsed").sum())
    collapsed: dict[str, int] = dict(zip(earlier["table"], earlier["collapsed"]))
    kept: dict[str, pl.DataFrame] = {}
    for name, key in DEDUPE_KEYS.items():
        everything = pl.concat([getattr(p, name) for p in parts], how="vertical")
        rows = pl.concat(fresh[name], how="vertical")
        keyed = rows.filter(pl.col("requestId") != "")
        kept[name] = pl.concat([keyed.unique(subset=key, keep="first", maintain_order=True),
                                rows.filter(pl.col("requestId") == "")])
        collapsed[name] = collapsed.get(name, 0) + everything.height - kept[name].height
        if name == "rejects":
            blocks = pl.col("kind") == "transaction_block"
            collapsed["rejected_blocks"] = (collapsed.get("rejected_blocks", 0) + everything.filter(blocks).height
                                            - kept[name].filter(blocks).height)
    duplicates = pl.DataFrame({"table": list(collapsed), "collapsed": list(collapsed.values())},
                              schema=DUPLICATE_SCHEMA).sort("table")
    return ParsedLogs(files=pl.concat(marked, how="vertical"), record_counts=pl.concat(fresh["record_counts"]),
                      duplicates=duplicates, **kept)


DEDUPE_KEYS = {
    "transactions": ["requestId", "messageId", "id", "timestamp"],
    "events": ["kind", "requestId", "messageId", "timestamp", "text"],
    "rejects": ["kind", "requestId", "messageId", "timestamp", "excerpt"],
}
