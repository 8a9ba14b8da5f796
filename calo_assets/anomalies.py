"""Stage 5, findings: one row per anomaly, with type, severity, the transaction(s) and why.

The ledger's own flags (mismatch, continuity break, overdraft, out of sync) are
repeated here so one table lists everything a person should look at; the
pattern detectors (MAD spikes, bursts, rapid deductions, calendar, rounding)
each read a threshold from `Settings`.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from decimal import Decimal
from statistics import median

import polars as pl

from calo_assets.money import fmt
from calo_assets.settings import Settings

#: Actions the upstream system is known to send (read off the real export).
KNOWN_ACTIONS = frozenset({
    "ADD_DELIVERY_ADDONS", "CALO_TEAM_PERKS", "CASH_OR_BENEFIT_PAYMENT", "CHANGE_PLAN", "COMPENSATION",
    "CUSTOMERS_CALO_EXPERIMENTS", "CUSTOMERS_INFLUENCERS", "CX_GIFT", "DELIVERY_CANCELLATION",
    "DELIVERY_DEDUCTION", "DOUBLE_ENTRY", "FIXING_BALANCE", "FOOD_POISONING", "FOREIGN_OBJECT",
    "LEAVING_THE_COUNTRY", "MANUAL_DISCOUNT", "MEDICAL_CONDITION", "PARTIAL_REFUND", "PAY_PENDING_AMOUNT",
    "PURCHASE_ADDON_SUBSCRIPTION", "REFERRAL_REDEEM_DAYS", "REFERRAL_REDEEM_DISCOUNT", "REFUNDED_MANUALLY",
    "RENEW_SUBSCRIPTION", "REPLACE_FOOD", "PERSONAL_PREFERENCE", "DONATE_RAMADAN_MEAL",
})
#: The consistency constant that makes the MAD comparable to a standard deviation.
MAD_SCALE = Decimal("0.6745")
MAD_MIN_TRANSACTIONS = 5
NOISE_PLACES = 6  # more decimal places than this in a logged amount is binary-float noise

SEVERITY = {
    "BalanceMismatch": "high", "Overdraft": "high", "DuplicateTxId": "high", "CurrencyMismatch": "high",
    "ContinuityBreak": "medium", "OutOfSync": "medium", "RefusedDebit": "medium", "InvalidAction": "medium",
    "MADSpike": "medium", "RapidManualDeduction": "medium",
    "Burst": "low", "RepeatDelivery": "low", "MissingField": "low", "AfterHours": "low", "Weekend": "low",
    "RoundingPattern": "low",
}
ANOMALY_TYPES = tuple(SEVERITY)
#: The ledger columns the row detectors read (a narrow copy keeps memory down on big ledgers).
DETECTOR_COLUMNS = [
    "id", "userId", "currency", "timestamp", "sourceFile", "line", "requestId", "type", "typeInferred", "source",
    "action", "outcome", "shape", "amount", "vat", "places", "chainLink", "expectedNewBalance",
    "balanceMismatch", "balanceExplanation", "continuityBreak", "continuityReason", "continuityFollows",
    "overdraft", "overdraftReason", "overdraftExplanation", "inSync", "syncExplanation",
    "newBalanceMissing", "vatMissing", "paymentBalance",
]
ANOMALY_SCHEMA = {
    "type": pl.String, "severity": pl.String, "transactionId": pl.String, "userId": pl.String,
    "currency": pl.String, "timestamp": pl.Datetime("ms", "UTC"), "relatedIds": pl.String,
    "details": pl.String, "sourceFile": pl.String, "line": pl.Int64,
}


def detect_anomalies(ledger: pl.DataFrame, events: pl.DataFrame, settings: Settings) -> pl.DataFrame:
    """Every finding, most severe first, then in ledger order."""
    rows = ledger.select(DETECTOR_COLUMNS).to_dicts()
    found: list[dict] = []
    for detector in (_ledger_flags, _invalid_actions, _mad_spikes, _duplicate_ids, _rapid_manual_deductions,
                     _bursts, _rounding, _currency_mismatch):
        found += detector(rows, settings)
    found += _calendar(ledger, settings)
    found += _refusals_without_block(events, ledger)
    order = {"high": 0, "medium": 1, "low": 2}
    frame = pl.DataFrame(found, schema=ANOMALY_SCHEMA)
    return frame.sort([pl.col("severity").replace_strict(order, return_dtype=pl.Int8), "type", "userId",
                       "timestamp", "transactionId"], nulls_last=True)


def _finding(kind: str, row: dict, details: str, related: list[str] | None = None) -> dict:
    return {"type": kind, "severity": SEVERITY[kind], "transactionId": row.get("id"), "userId": row.get("userId"),
            "currency": row.get("currency"), "timestamp": row.get("timestamp"),
            "relatedIds": ",".join(related) if related else None, "details": details,
            "sourceFile": row.get("sourceFile"), "line": row.get("line")}


def _ledger_flags(rows: list[dict], s: Settings) -> list[dict]:
    """The ledger's checks, one finding each, with the ledger's own explanation."""
    out = []
    for r in rows:
        if r["balanceMismatch"]:
            out.append(_finding("BalanceMismatch", r, r["balanceExplanation"]))
        if r["continuityBreak"]:
            out.append(_finding("ContinuityBreak", r, r["continuityReason"], [r["continuityFollows"]]))
        if r["overdraft"]:
            out.append(_finding("Overdraft", r, f"{r['overdraftReason']}: {r['overdraftExplanation']}"))
        if r["inSync"] is False:
            out.append(_finding("OutOfSync", r, r["syncExplanation"]))
        if r["outcome"] == "refused":
            out.append(_finding("RefusedDebit", r, "the Lambda refused this transaction: it would have left "
                                                   f"a negative balance (expected {fmt(r['expectedNewBalance'], r['places'])})"))
        if r["outcome"] == "already_synced":
            out.append(_finding("RepeatDelivery", r, "delivered again after it was already synced by another "
                                                     "listener; not applied a second time"))
        logged = {"type": not r["typeInferred"], "source": r["source"] is not None,
                  "action": r["action"] is not None, "paymentBalance": r["paymentBalance"] is not None,
                  "newBalance": not r["newBalanceMissing"], "vat": not r["vatMissing"]}
        missing = [name for name, present in logged.items() if not present]  # read off the row, not its shape
        if missing:
            out.append(_finding("MissingField", r, f"not logged: {', '.join(missing)}"
                                + ("; direction inferred as " + r["type"] if r["typeInferred"] else "")))
    return out


def _invalid_actions(rows: list[dict], s: Settings) -> list[dict]:
    out = []
    for r in rows:
        action = r["action"]
        if action is None:
            continue
        if "INVALID" in action or "INVAILID" in action:
            out.append(_finding("InvalidAction", r, f"action {action!r} marks an invalid entry"))
        elif action not in KNOWN_ACTIONS:
            out.append(_finding("InvalidAction", r, f"action {action!r} is not in the known vocabulary"))
    return out


def _mad_spikes(rows: list[dict], s: Settings) -> list[dict]:
    """Amounts far from the user's usual for that direction, by median absolute deviation."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        if r["chainLink"]:
            groups[(r["userId"], r["type"])].append(r)
    out = []
    for (_user, kind), members in groups.items():
        if len(members) < MAD_MIN_TRANSACTIONS:
            continue
        amounts = [m["amount"] for m in members]
        mid = median(amounts)
        mad = median(abs(a - mid) for a in amounts)
        if mad == 0:
            continue
        for m in members:
            score = MAD_SCALE * (m["amount"] - mid) / mad
            if abs(score) > s.mad_threshold:
                p = m["places"]
                out.append(_finding("MADSpike", m, (
                    f"{kind} amount {fmt(m['amount'], p)} vs this user's median {fmt(mid, p)} "
                    f"(MAD {fmt(mad, p)}, {len(members)} transactions): robust z-score {score:.1f}, "
                    f"threshold {s.mad_threshold}")))
    return out


def _duplicate_ids(rows: list[dict], s: Settings) -> list[dict]:
    """One transaction id applied more than once (repeat deliveries, which were not applied, aside)."""
    by_id: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if r["outcome"] in ("applied", "unknown"):
            by_id[r["id"]].append(r)
    out = []
    for members in by_id.values():
        if len(members) > 1:
            where = "; ".join(f"{m['sourceFile']}:{m['line']}" for m in members)
            for m in members[1:]:
                out.append(_finding("DuplicateTxId", m, f"transaction id applied {len(members)} times ({where})",
                                    [x["requestId"] for x in members]))
    return out


def _rapid_manual_deductions(rows: list[dict], s: Settings) -> list[dict]:
    window = timedelta(seconds=s.rapid_window_seconds)
    last: dict[tuple, dict] = {}
    out = []
    for r in rows:
        if r["source"] != "MANUAL_DEDUCTION" or r["type"] != "DEBIT" or not r["chainLink"]:
            continue
        key = (r["userId"], r["amount"])
        prev = last.get(key)
        if prev is not None and r["timestamp"] - prev["timestamp"] <= window:
            gap = (r["timestamp"] - prev["timestamp"]).total_seconds()
            out.append(_finding("RapidManualDeduction", r, (
                f"the same manual deduction of {fmt(r['amount'], r['places'])} {r['currency']} again "
                f"{gap:.1f} s after {prev['id']} (window {s.rapid_window_seconds} s)"), [prev["id"]]))
        last[key] = r
    return out


def _bursts(rows: list[dict], s: Settings) -> list[dict]:
    """Several transactions of one user within the burst window: one finding per burst."""
    window = timedelta(milliseconds=s.burst_window_ms)
    by_user: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_user[r["userId"]].append(r)
    out = []
    for members in by_user.values():
        i = 0
        while i < len(members):
            j = i
            while j + 1 < len(members) and members[j + 1]["timestamp"] - members[i]["timestamp"] <= window:
                j += 1
            if j - i + 1 >= s.burst_min_transactions:
                group = members[i : j + 1]
                span = (group[-1]["timestamp"] - group[0]["timestamp"]).total_seconds() * 1000
                out.append(_finding("Burst", group[0], (
                    f"{len(group)} transactions of this user within {span:.0f} ms "
                    f"(at least {s.burst_min_transactions} within {s.burst_window_ms} ms)"),
                    [g["id"] for g in group[1:]]))
                i = j + 1
            else:
                i += 1
    return out


def _rounding(rows: list[dict], s: Settings) -> list[dict]:
    out = []
    for r in rows:
        for name in ("amount", "vat"):
            value = r[name]
            if value is None:
                continue
            places = -value.normalize().as_tuple().exponent
            if places > NOISE_PLACES:
                out.append(_finding("RoundingPattern", r, f"{name} {value.normalize():f} carries binary-float noise "
                                                          f"({places} decimal places)"))
            elif places > r["places"]:
                out.append(_finding("RoundingPattern", r, f"{name} {value.normalize():f} has {places} decimal places; "
                                                          f"{r['currency']} uses {r['places']}"))
    return out


def _currency_mismatch(rows: list[dict], s: Settings) -> list[dict]:
    seen: dict[str, dict[str, dict]] = defaultdict(dict)
    for r in rows:
        seen[r["userId"]].setdefault(r["currency"], r)
    out = []
    for currencies in seen.values():
        if len(currencies) > 1:
            first = next(iter(currencies.values()))
            out.append(_finding("CurrencyMismatch", first, "one user seen in several currencies: "
                                + ", ".join(sorted(currencies)), [r["id"] for r in currencies.values()]))
    return out


def _calendar(ledger: pl.DataFrame, s: Settings) -> list[dict]:
    """Postings outside business hours or on the weekend, in the currency's country's local time.

    Scheduled actions (the nightly delivery run) and rows without an action (the
    old shape, which cannot tell a batch from a person) are left out.
    """
    out = []
    start, end = s.business_hours
    postings = ledger.filter(pl.col("action").is_not_null()
                             & ~pl.col("action").is_in(list(s.calendar_exempt_actions)))
    for currency, tz in s.time_zones.items():
        part = postings.filter(pl.col("currency") == currency).with_columns(
            pl.col("timestamp").dt.convert_time_zone(tz).alias("local"))
        weekend = s.weekends.get(currency, ())
        for r in part.iter_rows(named=True):
            local = r["local"]
            when = f"{local:%a %Y-%m-%d %H:%M} {tz}"
            if not start <= local.hour < end:
                out.append(_finding("AfterHours", r, f"posted at {when}, outside {start:02d}:00-{end:02d}:00"))
            if local.weekday() in weekend:
                out.append(_finding("Weekend", r, f"posted on {when}, a weekend day in {tz}"))
    return out


def _refusals_without_block(events: pl.DataFrame, ledger: pl.DataFrame) -> list[dict]:
    """Refusals that name a transaction no block in the logs holds: nothing else would show them."""
    known = set(ledger["id"].to_list())
    currency_of = dict(zip(ledger["userId"], ledger["currency"]))
    out = []
    for e in events.filter(pl.col("kind") == "refusal").iter_rows(named=True):
        if e["transactionId"] not in known:
            row = {"id": e["transactionId"], "userId": e["userId"], "currency": currency_of.get(e["userId"]),
                   "timestamp": e["timestamp"],
                   "sourceFile": e["sourceFile"], "line": e["line"]}
            out.append(_finding("RefusedDebit", row, "the Lambda refused a debit (balance would go negative; "
                                                     f"current balance {_plain(e['currentBalance'])}) whose transaction "
                                                     "block is not in these logs"))
    return out


def _plain(value: Decimal | None) -> str:
    return "not logged" if value is None else f"{value.normalize():f}"
