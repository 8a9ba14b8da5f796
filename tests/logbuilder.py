"""Build small balance-sync logs in the real text format, for tests.

`tx(...)` gives a transaction's fields and `start_syncing` prints its block the
way Node prints it (the generator's printer, `calo_testkit.node_print`);
`invocation(...)` wraps messages in START/END/REPORT; `write_log` puts records
in a file (gzip or plain) with the blank line CloudWatch puts after each record.
"""

from __future__ import annotations

import gzip
from datetime import datetime, timedelta
from itertools import count
from pathlib import Path

from calo_testkit.node_print import Raw, inspect

BASE = datetime(2024, 1, 10, 8, 0, 0)
_ids = count(1)


def ts(offset_ms: int = 0) -> str:
    moment = BASE + timedelta(milliseconds=offset_ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def app(offset_ms: int, request_id: str, message: str, level: str = "INFO") -> str:
    stamp = ts(offset_ms)
    return f"{stamp} {stamp}\t{request_id}\t{level}\t{message}"


def tx(user: str = "user-1", amount="8", vat="0", old="24.4", new="16.4", type_="DEBIT", currency="BHD",
       payment=None, source="MANUAL_DEDUCTION", action="DELIVERY_DEDUCTION", tx_id: str | None = None,
       old_shape: bool = False) -> dict:
    """Transaction fields; numbers are given as text and kept `Raw`, so they print exactly as logged."""
    tx_id = tx_id or f"01TEST{next(_ids):020d}"
    if old_shape:
        fields = {"id": tx_id, "userId": user, "currency": currency, "amount": Raw(amount),
                  "vat": Raw(vat), "oldBalance": Raw(old), "newBalance": Raw(new)}
    else:
        fields = {"id": tx_id, "type": type_, "source": source, "action": action, "userId": user,
                  "paymentBalance": Raw(payment if payment is not None else new), "updatePaymentBalance": True,
                  "metadata": '{"walletId":"wallet#x"}', "currency": currency, "amount": Raw(amount),
                  "vat": Raw(vat), "oldBalance": Raw(old), "newBalance": Raw(new)}
        if new is None:
            del fields["newBalance"]
    return fields


def start_syncing(fields: dict) -> str:
    return "Start syncing the balance " + inspect({"transaction": fields})


def message(at_ms: int, request_id: str, fields: dict | None, outcome: str = "applied",
            message_id: str | None = None) -> list[str]:
    """One SQS message: `Processing message`, its block, and what the Lambda logged after it."""
    message_id = message_id or f"msg-{next(_ids)}"
    records = [app(at_ms, request_id, f"Processing message {message_id}")]
    if fields is not None:
        records.append(app(at_ms + 1, request_id, start_syncing(fields)))
    follow = {
        "applied": "SubscriptionBalanceUpdated event published",
        "already_synced": "Skipping the process, balance is already synced from other listeners",
        "failed": "An error occured while syncing the balance TypeError: Cannot read properties of undefined\n"
                  "    at sync (/var/task/index.js:1:1)",
    }.get(outcome)
    if follow:
        records.append(app(at_ms + 2, request_id, follow, "ERROR" if outcome == "failed" else "INFO"))
    elif outcome == "refused" and fields is not None:
        refusal = inspect({"message": "Subscriber will have a negative balance due to this action, "
                                      "the process will terminate.",
                           "data": {"userId": fields["userId"], "currentBalance": 1, "transactionId": fields["id"]}})
        records.append(app(at_ms + 2, request_id, refusal))
    return records


def invocation(at_ms: int, request_id: str, messages: list[list[str]]) -> list[str]:
    records = [f"{ts(at_ms)} START RequestId: {request_id} Version: $LATEST"]
    for m in messages:
        records += m
    end = at_ms + 50
    records += [f"{ts(end)} END RequestId: {request_id}",
                f"{ts(end)} REPORT RequestId: {request_id}\tDuration: 12.50 ms\tBilled Duration: 13 ms\t"
                f"Memory Size: 1024 MB\tMax Memory Used: 99 MB\t\nXRAY TraceId: 1-abc\tSegmentId: def\tSampled: true\t"]
    return records


def write_log(path: Path, records: list[str], compress: bool = True) -> Path:
    """Write records as CloudWatch exports them: each followed by a blank line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(r + "\n\n" for r in records).encode()
    path.write_bytes(gzip.compress(data, mtime=0) if compress else data)
    return path


def simple_log(folder: Path, transactions: list[dict], name: str = "2024-01-10-[$LATEST]abc/000000.gz",
               outcome: str = "applied") -> Path:
    """One file, one invocation per transaction, one second apart."""
    records = []
    for i, fields in enumerate(transactions):
        request = f"req-{i}-{fields['id'][-6:]}"
        records += invocation(i * 1000, request, [message(i * 1000 + 5, request, fields, outcome)])
    return write_log(folder / name, records, compress=name.endswith(".gz"))


#: Log text that must stay text in every report (the reports' tests look for it).
SCRIPT_ACTION = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'
SCRIPT_USER = '<img src=x onerror="window.__pwned=3">'
FORMULA_ACTION = '=HYPERLINK("http://example.invalid","click")'
CONTROL_ACTION = "BELL\x07ACTION"


def report_drop(folder: Path) -> Path:
    """One file touching every report section: three currencies, a mismatch, a refused overdraft,
    a refusal with no block, a sync error, float noise, and hostile text in log fields."""
    rows = [
        tx(user="u-bhd", amount="8", old="24.4", new="16.4"),
        tx(user="u-bhd", amount="60.181000000000004", old="16.4", new="-43.781", action=FORMULA_ACTION),
        tx(user="u-sar", amount="57.5", vat="7.5", old="1700", new="1650", currency="SAR", action=CONTROL_ACTION),
        tx(user=SCRIPT_USER, amount="10", old="100", new="95", currency="SAR", action=SCRIPT_ACTION),  # mismatch
        tx(user="u-aed", amount="5", old="20", new="15", currency="AED"),
        tx(user="u-aed", amount="40", old="10", new="50", type_="CREDIT", source="PAYMENT",
           action="RENEW_SUBSCRIPTION", currency="AED"),  # continuity break
    ]
    records = []
    for i, fields in enumerate(rows):
        records += invocation(i * 1000, f"req-{i}", [message(i * 1000 + 5, f"req-{i}", fields,
                                                             "refused" if i == 1 else "applied")])
    synced = message(9005, "req-sync", tx(user="u-aed", amount="1", old="50", new="49", currency="AED", payment="48"))
    not_in_sync = app(9007, "req-sync", "Subscription balance and payment balance are not in sync " + inspect(
        {"userId": "u-aed", "subscriptionBalance": Raw("49"), "paymentBalance": Raw("48")}), "ERROR")
    records += invocation(9000, "req-sync", [synced[:2] + [not_in_sync] + synced[2:]])
    refusal = inspect({"message": "Subscriber will have a negative balance due to this action, the process "
                                  "will terminate.",
                       "data": {"userId": "u-bhd", "currentBalance": Raw("2.5"), "transactionId": "01NOBLOCK"}})
    records += invocation(12000, "req-ref", [[app(12005, "req-ref", "Processing message m-ref"),
                                              app(12006, "req-ref", refusal)]])
    return write_log(folder / "2024-01-10-[$LATEST]abc/000000.gz", records)
