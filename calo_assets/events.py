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
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from calo_assets.node_inspect import UNDEFINED, InspectError, JsNumber, Placeholder, parse_inspect
from calo_assets.catalog import EVENTS
from calo_assets.records import Record

#: Money too large for a Decimal(38, 18) column is refused; more than 18 places (float noise
#: such as 1.1368683772161603e-13) is rounded half-up to 18, far below any currency's places.
MAX_MONEY = Decimal(10) ** 20
MONEY_QUANTUM = Decimal(1).scaleb(-18)
TRANSACTION_STRINGS = ("id", "type", "source", "action", "userId", "currency", "metadata")
#: From the JSON form, only these fields are kept; names, emails and phone numbers never are.
JSON_FORM_FIELDS = ("paymentMethod", "paymentProvider", "brand", "kitchen")
REQUIRED = ("id", "userId", "currency", "amount", "oldBalance")
#: The money a transaction block logs (the JSON form adds userBalance).
MONEY_FIELDS = ("amount", "vat", "oldBalance", "newBalance", "paymentBalance")

PROCESSING = re.compile(r"Processing message (\S+)")
START_SYNC = "Start syncing the balance"
NOT_IN_SYNC = "Subscription balance and payment balance are not in sync"
SYNC_FAILED = "An error occured while syncing the balance"
ALREADY_SYNCED = ("Skipping the process, balance is already synced", "Balance is already synced from other listeners")
REFUSAL = "Subscriber will have a negative balance"
FLAG_FALSE = "Skipping the process, Update Payment Balance Flag is set to false"
LOCK = "Transaction Lock created"

EXCERPT = 300


class FileEvents:
    """The rows one file's records yield, record by record: the full parser.

    It reads anything the framing hands it. The columnar reader (events_columnar)
    applies the same rules to many files at once and hands the files it is not
    sure of to this class; tests check that both give the same rows.
    """

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
            self.event(record, crash_kind(record.text), errorType=error_type(record.text))
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
        self.event(record, "metric", metric=",".join(names), userId=as_text(data.get("userId")),
                   action=as_text(data.get("action")))

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
                self.event(record, "sync_failed", messageId=message_id, errorType=error_type(text),
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
            tx = block_transaction(record.text, record.timestamp)
        except Unreadable as exc:
            self.reject(record, "transaction_block", str(exc), messageId=message_id)
            return None
        tx.update(jsonMerged=False, outcome="unknown", outcomeLine=None, **self.provenance(record, message_id))
        json_form = pending_json.pop(tx["id"], None)
        if json_form:
            merge_json_form(tx, json_form[1])
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
            merge_json_form(in_message[obj["id"]], kept)
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
                   userId=as_text(obj.get("userId")), transactionId=current and current["id"],
                   subscriptionBalance=money(obj.get("subscriptionBalance"), "subscriptionBalance", strict=False),
                   paymentBalance=money(obj.get("paymentBalance"), "paymentBalance", strict=False))

    def refusal(self, record: Record, message_id: str, in_message: dict[str, dict]) -> None:
        try:
            obj = parse_inspect(record.text)
            data = obj.get("data") if isinstance(obj, dict) else None
            data = data if isinstance(data, dict) else {}
        except InspectError as exc:
            self.reject(record, "refusal", f"unreadable refusal object: {exc}", messageId=message_id)
            return
        tx_id = as_text(data.get("transactionId"))
        tx = in_message.get(tx_id or "")
        if tx is not None:
            tx["outcome"], tx["outcomeLine"] = "refused", record.line
        self.event(record, "refusal", messageId=message_id, userId=as_text(data.get("userId")), transactionId=tx_id,
                   currentBalance=money(data.get("currentBalance"), "currentBalance", strict=False),
                   errorType=None if tx else "no transaction block for this id in the message")

    def other(self, record: Record, message_id: str) -> None:
        text = record.text
        if text.startswith("Skipping the balance sync for create"):
            kind, action = "skip_create_subscription", None
        elif text.startswith(FLAG_FALSE):
            kind, action = "skip_payment_flag_false", inline_value(text, "transactionAction")
        elif text.startswith(LOCK):
            kind, action = "transaction_lock", None
        elif text.startswith("Sending slack notification"):
            kind, action = "slack_notification", None
        elif text.startswith("record"):
            kind, action = "sqs_record", None
        elif text.startswith(("Uncaught Exception", "Invoke Error")):
            kind, action = crash_kind(text), None
        else:
            kind, action = f"other_{record.level.lower() or 'info'}", None
        self.count(f"application:{kind}")
        self.event(record, kind, messageId=message_id, action=action,
                   errorType=error_type(text) if kind.startswith(("crash", "invoke")) else None,
                   userId=inline_value(text, "userId"))

    # -- rows --------------------------------------------------------------------------------

    def count(self, kind: str) -> None:
        self.counts[kind] += 1

    def provenance(self, record: Record, message_id: str) -> dict:
        return {"sourceFile": self.source, "line": record.line, "endLine": record.end_line,
                "requestId": record.request_id, "messageId": message_id, "timestamp": record.timestamp}

    def event(self, record: Record, kind: str, messageId: str = "", **values) -> None:
        row = dict.fromkeys(EVENTS.columns)
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


class Unreadable(ValueError):
    """A record that should hold an object does not; the message is the reject's reason."""


def block_transaction(text: str, timestamp: str) -> dict:
    """The typed transaction of a `Start syncing the balance` message logged at `timestamp`.

    Raises Unreadable with the reason a person reads in the rejects.
    """
    try:
        obj = parse_inspect(text[len(START_SYNC):])
        if not isinstance(obj, dict) or not isinstance(obj.get("transaction"), dict):
            raise ValueError("the object has no `transaction` member")
        tx = transaction_row(obj["transaction"])
        _check_timestamp(timestamp)
    except ValueError as exc:  # InspectError is one
        reason = f"unreadable transaction block: {exc}"
        if not text.rstrip().endswith("}"):
            reason += " (the block is cut short: the file may be truncated here)"
        raise Unreadable(reason) from None
    return tx


def transaction_row(obj: dict) -> dict:
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
        row[key] = money(obj.get(key), key)
    if row["type"] is not None and row["type"] not in ("DEBIT", "CREDIT"):
        raise ValueError(f"type {row['type']!r} is neither DEBIT nor CREDIT")
    flag = obj.get("updatePaymentBalance")
    row["updatePaymentBalance"] = flag if isinstance(flag, bool) else None
    row["shape"] = "typed" if row["type"] is not None else "old"  # `type: undefined` is no type either
    return row


def merge_json_form(tx: dict, fields: dict) -> None:
    """The JSON form adds payment details (never personal fields) to its block's transaction."""
    for key in JSON_FORM_FIELDS:
        tx[key] = as_text(fields.get(key))
    tx["userBalance"] = money(fields.get("userBalance"), "userBalance", strict=False)
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


def money(value, name: str, strict: bool = True) -> Decimal | None:
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


def as_text(value) -> str | None:
    return value if isinstance(value, str) else None


_INLINE: dict[str, re.Pattern] = {}


def inline_value(text: str, key: str) -> str | None:
    """A `key: 'value'` from a one-line object, without parsing the whole record."""
    pattern = _INLINE.setdefault(key, re.compile(rf"""\b{key}:\s*['"]([^'"]*)['"]"""))
    found = pattern.search(text)
    return found.group(1) if found else None


def crash_kind(text: str) -> str:
    return "invoke_error" if text.startswith("Invoke Error") else "crash"


def error_type(text: str) -> str | None:
    found = re.search(r'"errorType":"([^"]+)"|(\w*Error):', text)
    return (found.group(1) or found.group(2)) if found else None
