"""Stage 3, events, column-wise: the rules of `events.FileEvents` applied to many files' records at once.

`events.py` states the rules record by record; this module applies the same
rules as Polars expressions over a table of records, so reading costs per
column, not per record. What it cannot vouch for goes back to the record-by-
record code: an object printed in an uncommon shape (escapes, nesting, numbers
with exponents) is parsed by `parse_inspect`; rare records (metrics, refusals,
JSON forms, crashes) are read by the same helpers `FileEvents` uses. Rows come
out in the order `FileEvents` would give them, file by file.

Order, as `FileEvents` makes it: in each file, the records outside an
invocation in file order, then each invocation (in order of its first record)
with its records in time order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import polars as pl

from calo_assets.events import (ALREADY_SYNCED, EXCERPT, FLAG_FALSE, JSON_FORM_FIELDS, LOCK, MONEY_FIELDS, NOT_IN_SYNC,
                                REFUSAL, REQUIRED, START_SYNC, SYNC_FAILED, TRANSACTION_STRINGS, Unreadable, as_text,
                                block_transaction, crash_kind, error_type, inline_value, money)
from calo_assets.node_inspect import InspectError, flat_fields, parse_inspect, printed_number, printed_string
from calo_assets.catalog import EVENTS, MONEY, REJECTS, TRANSACTIONS
from calo_assets.parsed import with_times
from calo_assets.records import INIT_FIELDS, REPORT_FIELDS

#: Python's whitespace (`\\s`, `str.strip`) also holds the four ASCII separators; Rust's does not.
SPACE = r"[\s\x1c-\x1f]"
PROCESSING = r"^Processing message ([^\s\x1c-\x1f]+)"
TRANSACTION_OPENING, TRANSACTION_CLOSING = r" \{\n  transaction: \{\n", r"  \}\n\}"
SYNC_ERROR_OPENING, SYNC_ERROR_CLOSING = r" \{\n", r"\}"
#: The kinds of messages inside an invocation, in the order `FileEvents.message` tests them.
MESSAGE_KINDS = [
    ("start_syncing", pl.col("text").str.starts_with(START_SYNC)),
    ("transaction_json", pl.col("text").str.starts_with("transaction {") | pl.col("text").str.starts_with("transaction{")),
    ("event_published", pl.col("text").str.starts_with("SubscriptionBalanceUpdated event published")),
    ("already_synced", pl.any_horizontal([pl.col("text").str.starts_with(p) for p in ALREADY_SYNCED])),
    ("sync_failed", pl.col("text").str.starts_with(SYNC_FAILED)),
    ("not_in_sync", pl.col("text").str.starts_with(NOT_IN_SYNC)),
    ("refusal", pl.col("text").str.contains(REFUSAL, literal=True) & pl.col("text").str.contains(rf"^{SPACE}*\{{")),
    ("skip_create_subscription", pl.col("text").str.starts_with("Skipping the balance sync for create")),
    ("skip_payment_flag_false", pl.col("text").str.starts_with(FLAG_FALSE)),
    ("transaction_lock", pl.col("text").str.starts_with(LOCK)),
    ("slack_notification", pl.col("text").str.starts_with("Sending slack notification")),
    ("sqs_record", pl.col("text").str.starts_with("record")),
    ("invoke_error", pl.col("text").str.starts_with("Invoke Error")),
    ("crash", pl.col("text").str.starts_with("Uncaught Exception")),
]
OUTCOME_OF = {"event_published": "applied", "already_synced": "already_synced", "sync_failed": "failed"}
#: Kinds that are only counted: the block itself, its JSON form and the outcome lines.
NO_EVENT = {"start_syncing", "transaction_json", "event_published", "already_synced"}


@dataclass
class Rows:
    """The rows of a set of files, in `FileEvents` order, and per file its counts."""

    transactions: pl.DataFrame
    events: pl.DataFrame
    rejects: pl.DataFrame
    counts: pl.DataFrame  # file, kind, count (sorted by kind within a file)
    blocks: pl.DataFrame  # file, transactionBlocks


def read_records(records: pl.DataFrame, sources: list[str]) -> Rows:
    """Transactions, events, rejects and counts of framed records (`records.frame_table`).

    `sources[file]` is the path a row names as its `sourceFile`.
    """
    records = records.with_row_index("pos").with_columns(file_path=pl.col("file").replace_strict(
        list(range(len(sources))), sources, return_dtype=pl.String))
    in_invocation = (pl.col("kind") == "application") & ~pl.col("request_id").is_in(["", "undefined"])
    standalone = _standalone(records.filter(~in_invocation))
    invocations = _Invocations(records.filter(in_invocation))
    events = pl.concat([standalone.events, invocations.events()], how="vertical")
    order = ["file", "section", "seq", "sub"]
    return Rows(
        transactions=with_times(invocations.transactions().sort(order).select(TRANSACTIONS.names)),
        events=with_times(events.sort(order).select(EVENTS.names)),
        rejects=with_times(invocations.rejects().sort(order).select(REJECTS.names)),
        counts=(pl.concat([standalone.counts, invocations.counts()]).group_by("file", "kind").agg(pl.col("count").sum())
                .sort("file", "kind")),
        blocks=invocations.blocks(),
    )


# -- records outside an invocation -----------------------------------------------------------------


@dataclass
class _Standalone:
    events: pl.DataFrame
    counts: pl.DataFrame


def _standalone(records: pl.DataFrame) -> _Standalone:
    platform, metric = pl.col("kind") == "platform", pl.col("kind") == "metric"
    crash = pl.col("kind") == "application"
    counted = records.with_columns(count_kind=pl.when(platform).then(pl.lit("platform:") + pl.col("name"))
                                   .when(metric).then(pl.lit("metric"))
                                   .when(crash).then(pl.lit("application:crash"))
                                   .otherwise(pl.lit("unrecognised")))
    counts = counted.group_by("file", "count_kind").len().rename({"count_kind": "kind", "len": "count"})
    report = pl.col("name") == "REPORT"
    fields = pl.when(report).then(pl.col("text").str.extract_all(REPORT_FIELDS.pattern)) \
        .otherwise(pl.col("text").str.extract_all(INIT_FIELDS.pattern))
    platform_events = (records.filter(platform & ~pl.col("name").is_in(["START", "END"]))
                       .with_columns(fields=fields)
                       .with_columns(kind=pl.col("name").str.to_lowercase(),
                                     durationMs=pl.coalesce(_field("Duration"), _field("Init Duration")),
                                     maxMemoryMb=_field("Max Memory Used"), errorType=_field("Error Type")))
    python_made = [_python_standalone(row) for row in
                   records.filter(metric | crash).select("pos", "text", "kind").iter_rows(named=True)]
    others = records.filter(metric | crash).drop("kind").with_columns(
        pl.Series("made", python_made, dtype=pl.Struct({"kind": pl.String, "metric": pl.String, "userId": pl.String,
                                                        "action": pl.String, "errorType": pl.String}))
    ).unnest("made")
    unrecognised = records.filter(pl.col("kind") == "unrecognised").with_columns(kind=pl.lit("unrecognised"))
    events = pl.concat([platform_events, others, unrecognised], how="diagonal_relaxed").sort("pos")
    return _Standalone(_event_rows(events, section=0, seq=pl.col("pos"), message_id=pl.lit("")), counts)


def _field(name: str) -> pl.Expr:
    """The last `name: value` that `Record.fields` finds (a dict keeps the last), stripped as str.strip does."""
    prefix = f"{name}: "
    return (pl.col("fields").list.eval(pl.element().filter(pl.element().str.starts_with(prefix))).list.last()
            .str.slice(len(prefix)).str.replace_all(rf"^{SPACE}+|{SPACE}+$", ""))


def _python_standalone(row: dict) -> dict:
    """Metric and crash records, read as `FileEvents.standalone` reads them (they are few)."""
    text = row["text"]
    if row["kind"] == "application":
        return {"kind": crash_kind(text), "errorType": error_type(text)}
    try:
        data = json.loads(text)
        names = [m["Name"] for d in data["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]]
    except (ValueError, KeyError, TypeError):
        return {"kind": "unrecognised"}
    return {"kind": "metric", "metric": ",".join(names), "userId": as_text(data.get("userId")),
            "action": as_text(data.get("action"))}


def _event_rows(frame: pl.DataFrame, section: int, seq: pl.Expr, message_id: pl.Expr, sub: int = 0) -> pl.DataFrame:
    """Event rows in the events' columns (plus the order keys), from records carrying the event's own columns."""
    own = {name: (pl.col(name) if name in frame.columns else pl.lit(None)).cast(dtype)
           for name, dtype in EVENTS.building_schema().items()
           if name not in ("sourceFile", "line", "timestamp", "requestId", "messageId", "level", "text")}
    return frame.select(
        "file", pl.lit(section).alias("section"), seq.alias("seq"), pl.lit(sub).alias("sub"),
        sourceFile=pl.col("file_path"), line=pl.col("line"), timestamp=pl.col("timestamp"),
        requestId=pl.col("request_id"), messageId=message_id,
        level=pl.when(pl.col("level") == "").then(None).otherwise(pl.col("level")),
        text=pl.col("text").str.slice(0, EXCERPT), **own)


# -- invocations, message by message ---------------------------------------------------------------


class _Invocations:
    """The records of every invocation, in time order, split into messages, with their transactions."""

    def __init__(self, records: pl.DataFrame):
        first = records.group_by("file", "request_id").agg(pl.col("pos").min().alias("first_pos"))
        records = (records.join(first, on=["file", "request_id"], how="left")
                   .sort("file", "first_pos", "timestamp", "line")
                   .with_row_index("seq")
                   .with_columns(processing_id=pl.col("text").str.extract(PROCESSING)))
        # invocations and their messages are runs of this order: number them with running sums, not windows
        starts = (pl.col("first_pos") != pl.col("first_pos").shift()).fill_null(True)
        processing = pl.col("processing_id").is_not_null()
        records = records.with_columns(
            message=(starts | processing).cum_sum(),
            message_id=pl.when(processing).then("processing_id").when(starts).then(pl.lit("")).forward_fill())
        kind = pl.lit(None, pl.String)
        for name, test in reversed(MESSAGE_KINDS):
            kind = pl.when(test).then(pl.lit(name)).otherwise(kind)
        other = pl.lit("other_") + pl.when(pl.col("level") == "").then(pl.lit("info")).otherwise(
            pl.col("level").str.to_lowercase())
        self.records = records.with_columns(
            kind=pl.when(pl.col("processing_id").is_not_null()).then(pl.lit("processing_message"))
            .otherwise(pl.coalesce(kind, other)))
        self.message = ["message"]
        self._blocks()
        self._refusals()
        self._json_forms()
        self._sync_errors()

    # -- transactions ----------------------------------------------------------------------------

    def _blocks(self) -> None:
        blocks = self.records.filter(pl.col("kind") == "start_syncing")
        fields = flat_fields(blocks["text"].str.slice(len(START_SYNC)), TRANSACTION_OPENING, TRANSACTION_CLOSING, 4,
                             TRANSACTION_SHAPES)
        fast = _typed_transactions(fields, blocks)
        slow = _python_transactions(blocks.filter(~fast["fast"]))
        self.transaction_rows = pl.concat([fast.filter("fast").drop("fast"), slow.ok], how="diagonal_relaxed")
        self.block_rejects = slow.rejects
        ok = self.transaction_rows.select("seq", "id", "userId")
        # the message's transaction each later record belongs to (a rejected block changes nothing)
        first_in_message = (pl.col("message") != pl.col("message").shift()).fill_null(True)
        self.records = (self.records.join(ok.rename({"id": "tx_id", "userId": "tx_user"}), on="seq", how="left",
                                          maintain_order="left")
                        .with_columns(current=pl.when(pl.col("tx_id").is_not_null()).then(pl.col("seq").cast(pl.Int64))
                                      .when(first_in_message).then(-1).forward_fill().replace(-1, None))
                        .join(ok.select(pl.col("seq").cast(pl.Int64).alias("current"), current_id="id",
                                        current_user="userId"), on="current", how="left", maintain_order="left"))

    def _refusals(self) -> None:
        """Refusals bind by transaction id to a block logged before them in the message (the last of that id)."""
        made, rejects = [], []
        for row in self.records.filter(pl.col("kind") == "refusal").iter_rows(named=True):
            try:
                obj = parse_inspect(row["text"])
            except InspectError as exc:
                rejects.append({"seq": row["seq"], "kind": "refusal", "reason": f"unreadable refusal object: {exc}"})
                continue
            data = obj.get("data") if isinstance(obj, dict) else None
            data = data if isinstance(data, dict) else {}
            made.append({"seq": row["seq"], "userId": as_text(data.get("userId")),
                         "transactionId": as_text(data.get("transactionId")),
                         "currentBalance": money(data.get("currentBalance"), "currentBalance", strict=False)})
        refusals = pl.DataFrame(made, schema={"seq": pl.UInt32, "userId": pl.String, "transactionId": pl.String,
                                              "currentBalance": MONEY})
        self.refusal_rejects = pl.DataFrame(rejects, schema={"seq": pl.UInt32, "kind": pl.String, "reason": pl.String})
        where = self.records.select("seq", *self.message)
        txs = self.transaction_rows.select(pl.col("seq").alias("tx_seq"), pl.col("id").alias("transactionId")) \
            .join(where.rename({"seq": "tx_seq"}), on="tx_seq")
        bound = (refusals.join(where, on="seq").with_columns(pl.col("transactionId").fill_null(""))
                 .join(txs, on=[*self.message, "transactionId"], how="left")
                 .filter(pl.col("tx_seq").is_null() | (pl.col("tx_seq") < pl.col("seq")))
                 .group_by("seq").agg(pl.col("tx_seq").max()))
        self.refusals = refusals.join(bound, on="seq", how="left")

    def _json_forms(self) -> None:
        """JSON forms merge into the block of their id in the message, before or after it (`FileEvents` rules)."""
        forms = self.records.filter(pl.col("kind") == "transaction_json")
        self.merges: list[dict] = []
        rejects: list[dict] = []
        if forms.height:
            messages = forms.select(self.message).unique()
            members = (self.records.join(messages, on=self.message)
                       .with_columns(message_end=pl.col("seq").max().over(self.message))
                       .filter(pl.col("kind").is_in(["transaction_json"]) | pl.col("tx_id").is_not_null())
                       .sort("seq"))
            for _, group in members.group_by(self.message, maintain_order=True):
                self._merge_message(group, rejects)
        self.json_rejects = pl.DataFrame(rejects, schema={"seq": pl.UInt32, "sub": pl.Int32, "kind": pl.String,
                                                          "reason": pl.String, "at": pl.UInt32})

    def _merge_message(self, group: pl.DataFrame, rejects: list[dict]) -> None:
        in_message: dict[str, int] = {}
        pending: dict[str, tuple[int, dict]] = {}
        last_seq = group["message_end"][0]
        for row in group.iter_rows(named=True):
            if row["tx_id"] is not None:
                in_message[row["tx_id"]] = row["seq"]
                if row["tx_id"] in pending:
                    self.merges.append({"seq": row["seq"], **pending.pop(row["tx_id"])[1]})
                continue
            try:
                obj = parse_inspect(row["text"].split("transaction", 1)[1])
                if not isinstance(obj, dict) or not isinstance(obj.get("id"), str):
                    raise ValueError("no transaction id")
            except ValueError as exc:  # InspectError is one
                rejects.append({"seq": row["seq"], "sub": 0, "kind": "json_transaction",
                                "reason": f"unreadable JSON-form transaction: {exc}"})
                continue
            kept = {key: obj.get(key) for key in (*JSON_FORM_FIELDS, "userBalance")}
            if obj["id"] in in_message:
                self.merges.append({"seq": in_message[obj["id"]], **kept})
            else:
                pending[obj["id"]] = (row["seq"], kept)
        for order, (seq, _) in enumerate(pending.values(), 1):  # at the message's end, in the order first pending
            rejects.append({"seq": last_seq, "sub": order, "kind": "json_transaction", "reason": (
                "JSON-form transaction with no `Start syncing the balance` block of the same id in its message; "
                "kept here so it is not lost"), "at": seq})

    def transactions(self) -> pl.DataFrame:
        records = self.records
        outcomes = (records.filter(pl.col("kind").is_in(list(OUTCOME_OF)) & pl.col("current").is_not_null())
                    .group_by("current").agg(pl.col("kind").sort_by("seq").first().alias("outcome_kind"),
                                             pl.col("line").sort_by("seq").first().alias("outcome_line"))
                    .rename({"current": "seq"}))
        refused = (records.filter(pl.col("kind") == "refusal").select("seq", "line")
                   .join(self.refusals.select("seq", "tx_seq"), on="seq")
                   .filter(pl.col("tx_seq").is_not_null())
                   .group_by("tx_seq").agg(pl.col("line").sort_by("seq").last().alias("refusal_line"))
                   .rename({"tx_seq": "seq"}))
        rows = (self.transaction_rows
                .join(records.select("seq", "file", "file_path", "line", "end_line", "request_id", "message_id",
                                     "timestamp"), on="seq", how="left")
                .join(outcomes, on="seq", how="left").join(refused, on="seq", how="left")
                .with_columns(
                    outcome=pl.when(pl.col("refusal_line").is_not_null()).then(pl.lit("refused"))
                    .otherwise(pl.col("outcome_kind").replace_strict(OUTCOME_OF, default="unknown")),
                    outcomeLine=pl.coalesce("refusal_line", "outcome_line").cast(pl.Int64),
                    jsonMerged=pl.lit(False)))
        if self.merges:
            merged = pl.DataFrame([_json_columns(m) for m in self.merges],
                                  schema={"seq": pl.UInt32, **{k: pl.String for k in JSON_FORM_FIELDS},
                                          "userBalance": MONEY})
            merged = merged.group_by("seq", maintain_order=True).last()  # a later merge replaces an earlier one
            rows = rows.join(merged, on="seq", how="left").with_columns(jsonMerged=pl.col("seq").is_in(merged["seq"].implode()))
        return rows.select(
            "file", pl.lit(1).alias("section"), "seq", pl.lit(0).alias("sub"),
            *[(pl.col(c) if c in rows.columns else pl.lit(None)).cast(dtype).alias(c)
              for c, dtype in TRANSACTIONS.building_schema().items()
              if c not in ("sourceFile", "line", "endLine", "requestId", "messageId", "timestamp")],
            sourceFile="file_path", line=pl.col("line").cast(pl.Int64), endLine=pl.col("end_line").cast(pl.Int64),
            requestId="request_id", messageId="message_id", timestamp="timestamp")

    # -- events and rejects ----------------------------------------------------------------------

    def events(self) -> pl.DataFrame:
        records = self.records
        kinds = pl.col("kind")
        failed = records.filter(kinds == "sync_failed").with_columns(
            transactionId=pl.col("current_id"), userId=pl.col("current_user"))
        failed = failed.with_columns(errorType=pl.Series([error_type(t) for t in failed["text"]], dtype=pl.String))
        refusals = records.filter(kinds == "refusal").join(self.refusals, on="seq").with_columns(
            errorType=pl.when(pl.col("tx_seq").is_null()).then(pl.lit("no transaction block for this id in the message")))
        others = records.filter(~kinds.is_in([*NO_EVENT, "processing_message", "sync_failed", "not_in_sync",
                                              "refusal"]))
        others = others.with_columns(
            action=pl.when(kinds == "skip_payment_flag_false")
            .then(_inline(others, "transactionAction")),
            userId=_inline(others, "userId"),
            errorType=pl.when(kinds.is_in(["crash", "invoke_error"]))
            .then(pl.Series([error_type(t) for t in others["text"]], dtype=pl.String)))
        frame = pl.concat([failed, self.sync_errors, refusals, others], how="diagonal_relaxed")
        return _event_rows(frame, section=1, seq=pl.col("seq"), message_id=pl.col("message_id"))

    def _sync_errors(self) -> None:
        """Not-in-sync objects: the common shape column-wise, the rest through `parse_inspect`."""
        records = self.records.filter(pl.col("kind") == "not_in_sync")
        fields = flat_fields(records["text"].str.slice(len(NOT_IN_SYNC)), SYNC_ERROR_OPENING, SYNC_ERROR_CLOSING, 2,
                             SYNC_ERROR_SHAPES)
        user = _printed(fields, "userId")
        balances = {name: printed_number(_printed(fields, name)) for name in ("subscriptionBalance", "paymentBalance")}
        values = pl.DataFrame({"userId": printed_string(user), **balances})
        fast = fields["simple"] & (_absent(user) | values["userId"].is_not_null())
        for name, value in balances.items():
            fast &= _absent(_printed(fields, name)) | value.is_not_null()
        made, rejects = [], []
        for seq, text in records.filter(~fast).select("seq", "text").iter_rows():
            try:
                obj = parse_inspect(text[len(NOT_IN_SYNC):])
            except InspectError as exc:
                rejects.append({"seq": seq, "kind": "sync_error", "reason": f"unreadable not-in-sync object: {exc}"})
                continue
            obj = obj if isinstance(obj, dict) else {}
            made.append({"seq": seq, "userId": as_text(obj.get("userId")),
                         "subscriptionBalance": money(obj.get("subscriptionBalance"), "subscriptionBalance",
                                                      strict=False),
                         "paymentBalance": money(obj.get("paymentBalance"), "paymentBalance", strict=False)})
        self.sync_error_rejects = pl.DataFrame(rejects, schema={"seq": pl.UInt32, "kind": pl.String,
                                                                "reason": pl.String})
        slow = pl.DataFrame(made, schema={"seq": pl.UInt32, "userId": pl.String, "subscriptionBalance": MONEY,
                                          "paymentBalance": MONEY})
        quick = records.with_columns(values).filter(fast)
        self.sync_errors = pl.concat([quick, records.join(slow, on="seq")], how="diagonal_relaxed") \
            .with_columns(transactionId=pl.col("current_id"), kind=pl.lit("sync_error"))

    def rejects(self) -> pl.DataFrame:
        rejects = pl.concat([self.block_rejects.with_columns(sub=pl.lit(0, pl.Int32)),
                             self.refusal_rejects.with_columns(sub=pl.lit(0, pl.Int32)),
                             self.sync_error_rejects.with_columns(sub=pl.lit(0, pl.Int32)),
                             self.json_rejects.select("seq", "sub", "kind", "reason")], how="diagonal_relaxed")
        at = self.json_rejects.filter(pl.col("sub") > 0)
        rows = rejects.join(self.records.select("seq", "file", "file_path", "line", "end_line", "timestamp",
                                                "request_id", "message_id", "text"), on="seq", how="left")
        if at.height:  # a leftover JSON form names its own record, ordered at the end of its message
            own = self.records.select(pl.col("seq").alias("at"), pl.col("line").alias("at_line"),
                                      pl.col("end_line").alias("at_end"), pl.col("timestamp").alias("at_ts"),
                                      pl.col("text").alias("at_text"))
            rows = rows.join(self.json_rejects.select("seq", "sub", "at"), on=["seq", "sub"], how="left") \
                .join(own, on="at", how="left").with_columns(
                    line=pl.coalesce("at_line", "line"), end_line=pl.coalesce("at_end", "end_line"),
                    timestamp=pl.coalesce("at_ts", "timestamp"), text=pl.coalesce("at_text", "text"))
        return rows.select("file", pl.lit(1).alias("section"), "seq", "sub",
                           sourceFile="file_path", line=pl.col("line").cast(pl.Int64),
                           endLine=pl.col("end_line").cast(pl.Int64), timestamp="timestamp",
                           requestId="request_id", messageId="message_id", kind="kind", reason="reason",
                           excerpt=pl.col("text").str.slice(0, EXCERPT))

    def counts(self) -> pl.DataFrame:
        return (self.records.group_by("file", "kind").len()
                .select("file", kind=pl.lit("application:") + pl.col("kind"), count="len"))

    def blocks(self) -> pl.DataFrame:
        return (self.records.filter(pl.col("kind") == "start_syncing").group_by("file")
                .agg(pl.len().alias("transactionBlocks")))


# -- values ----------------------------------------------------------------------------------------

#: The orders in which Node prints the two transaction shapes and the not-in-sync object.
TRANSACTION_SHAPES = (("id", "type", "source", "action", "userId", "paymentBalance", "updatePaymentBalance",
                       "metadata", "currency", "amount", "vat", "oldBalance", "newBalance"),
                      ("id", "userId", "currency", "amount", "vat", "oldBalance", "newBalance"))
SYNC_ERROR_SHAPES = (("userId", "subscriptionBalance", "paymentBalance"),)


def _printed(fields: pl.DataFrame, name: str) -> pl.Series:
    if name in fields.columns:
        return fields[name]
    return pl.Series(name, [None] * fields.height, dtype=pl.String)


def _absent(printed: pl.Series) -> pl.Series:
    """Not logged: missing, `undefined` or `null` (what `_is_absent` calls absent among simple values)."""
    return printed.is_null() | printed.is_in(["undefined", "null"])


def _typed_transactions(fields: pl.DataFrame, blocks: pl.DataFrame) -> pl.DataFrame:
    """The transactions of simple blocks column-wise; `fast` is false where `block_transaction` must decide."""
    printed = {name: _printed(fields, name) for name in (*TRANSACTION_STRINGS, *MONEY_FIELDS, "updatePaymentBalance")}
    text = {name: printed_string(printed[name]) for name in TRANSACTION_STRINGS}
    number = {name: printed_number(printed[name]) for name in MONEY_FIELDS}
    fast = fields["simple"] & blocks["timestamp"].str.to_datetime("%Y-%m-%dT%H:%M:%S%.3fZ", strict=False).is_not_null()
    for name in TRANSACTION_STRINGS:
        fast &= _absent(printed[name]) | text[name].is_not_null()
    for name in MONEY_FIELDS:
        fast &= _absent(printed[name]) | number[name].is_not_null()
    for name in REQUIRED:
        fast &= ~_absent(printed[name])
    fast &= text["type"].is_null() | text["type"].is_in(["DEBIT", "CREDIT"])
    flag = printed["updatePaymentBalance"]
    return pl.DataFrame({
        "seq": blocks["seq"], "fast": fast.fill_null(False), **text, **number,
        "updatePaymentBalance": pl.select(pl.when(flag == "true").then(True).when(flag == "false").then(False))
        .to_series(),
        "shape": pl.select(pl.when(text["type"].is_null()).then(pl.lit("old")).otherwise(pl.lit("typed"))).to_series(),
    })


@dataclass
class _Parsed:
    ok: pl.DataFrame
    rejects: pl.DataFrame


def _python_transactions(blocks: pl.DataFrame) -> _Parsed:
    ok, rejects = [], []
    for seq, text, timestamp in blocks.select("seq", "text", "timestamp").iter_rows():
        try:
            ok.append({"seq": seq, **block_transaction(text, timestamp)})
        except Unreadable as exc:
            rejects.append({"seq": seq, "kind": "transaction_block", "reason": str(exc)})
    schema = {"seq": pl.UInt32, **{k: TRANSACTIONS.columns[k].dtype for k in (*TRANSACTION_STRINGS, *MONEY_FIELDS)},
              "updatePaymentBalance": pl.Boolean, "shape": pl.String}
    return _Parsed(pl.DataFrame(ok, schema=schema),
                   pl.DataFrame(rejects, schema={"seq": pl.UInt32, "kind": pl.String, "reason": pl.String}))


def _json_columns(merge: dict) -> dict:
    """What `merge_json_form` sets on a transaction, from a JSON form's kept fields."""
    return {"seq": merge["seq"], **{k: as_text(merge.get(k)) for k in JSON_FORM_FIELDS},
            "userBalance": money(merge.get("userBalance"), "userBalance", strict=False)}


def _inline(records: pl.DataFrame, key: str) -> pl.Series:
    """`inline_value` of each record's text, asked only of the texts that mention the key."""
    mentions = records["text"].str.contains(key, literal=True)
    values = [inline_value(text, key) if hit else None for text, hit in zip(records["text"], mentions)]
    return pl.Series(values, dtype=pl.String)
