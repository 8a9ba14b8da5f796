"""The columnar ledger, findings and per-currency totals equal the row-by-row code they replaced.

The oracle is the Python implementation as it stood before the rewrite (commit f5dce48), kept here
only as a reference: a per-row Decimal loop is easy to check by hand. One change: its totals sum in
a 60-digit context (the old default of 28 digits rounded sums of huge amounts; the new sums are exact).
It is compared frame for frame on the real export, on generated exports with faults, and on
hypothesis-made transactions with hostile values (amounts next to 1e20, a millionth of a cent below
zero, places 0, differences exactly at the tolerance, one id applied twice, users in two currencies).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal, localcontext
from statistics import median

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st
from polars.testing import assert_frame_equal

from calo_assets.anomalies import KNOWN_ACTIONS, MAD_MIN_TRANSACTIONS, MAD_SCALE, NOISE_PLACES, detect_anomalies
from calo_assets.catalog import ANOMALIES, LEDGER, SEVERITY
from calo_assets.reading import read_logs
from calo_assets.ledger import ORDER, build_ledger, money_scale
from calo_testkit.generator import generate_export
from calo_assets.money import fmt, round_money
from calo_assets.settings import Settings
from calo_assets.summary import currency_totals
from tests.frames import NO_ERRORS, T0, row, transactions

# -- the oracle: the row-by-row ledger -----------------------------------------------------------------


def signed(value: Decimal, places: int) -> str:
    text = fmt(value, places)
    return text if text.startswith("-") else "+" + text


def beyond(difference: Decimal, tolerance: Decimal) -> bool:
    return abs(difference) > tolerance


NOT_APPLIED = {"already_synced": "a repeat delivery (already synced elsewhere)",
               "refused": "refused by the Lambda (would go negative)",
               "failed": "the sync failed with an error"}
ZERO = Decimal(0)


@dataclass
class _Chain:
    """The last link seen for one user: what the next oldBalance should start from."""

    tx_id: str
    balance: Decimal


def row_by_row_ledger(transactions: pl.DataFrame, sync_errors: pl.DataFrame, settings: Settings) -> pl.DataFrame:
    """The ledger as the old code built it: one Python dict per row, Decimal arithmetic."""
    tx = transactions.sort(ORDER, nulls_last=True)
    linked = (sync_errors.filter(pl.col("transactionId").is_not_null())
              .group_by("transactionId").agg(pl.col("line").first().alias("syncErrorLine"),
                                             pl.col("subscriptionBalance").first().alias("syncErrorSubscriptionBalance")))
    tx = tx.join(linked, left_on="id", right_on="transactionId", how="left", maintain_order="left")
    schema = _computed_schema(money_scale(settings))
    last: dict[str, _Chain] = {}  # per user, the chain link the next row follows
    last_pay: dict[str, _Chain] = {}
    with localcontext() as ctx:
        ctx.prec = 60  # 38 digits in, sums stay exact: the only rounding is the currency's half-up
        rows = [_check(row, settings) for row in tx.iter_rows(named=True)]
        _chain(rows, tx, settings, last, last_pay)
    ledger = pl.concat([tx.drop("type"), pl.DataFrame(rows, schema=schema)], how="horizontal")
    return ledger.select([c for c in LEDGER.names if c in ledger.columns]
                         + [c for c in ledger.columns if c not in LEDGER.names])


def _check(row: dict, s: Settings) -> dict:
    """The per-row checks (balance arithmetic, overdraft, payment balance in sync)."""
    cur = row["currency"]
    p = s.places(cur)
    amount, vat, old, new = row["amount"], row["vat"], row["oldBalance"], row["newBalance"]
    vat_value = vat if vat is not None else ZERO
    net = amount - vat_value
    kind, inferred, type_note = _direction(row["type"], old, new)
    expected = round_money(old + net if kind == "CREDIT" else old - net, p)
    sign = "+" if kind == "CREDIT" else "-"
    worked = f"{fmt(old, p)} {sign} ({fmt(amount, p)} - {fmt(vat_value, p)})"
    out: dict = {"type": kind, "typeInferred": inferred, "netAmount": round_money(net, p),
                 "expectedNewBalance": expected, "places": p, "newBalanceMissing": new is None,
                 "vatMissing": vat is None}
    if new is None:
        out.update(newBalanceFilled=expected, balanceDifference=ZERO, balanceMismatch=False,
                   suggestedAdjustment=ZERO,
                   balanceExplanation=f"expected {fmt(expected, p)} = {worked}; newBalance not logged, "
                                      "filled with the expected value for continuity")
    else:
        actual = round_money(new, p)
        diff = expected - actual
        mismatch = beyond(diff, s.tolerance)
        out.update(newBalanceFilled=actual, balanceDifference=diff, balanceMismatch=mismatch,
                   suggestedAdjustment=diff if mismatch else ZERO,
                   balanceExplanation=(
                       f"expected {fmt(expected, p)} = {worked}, logged {fmt(actual, p)}"
                       + (f": off by {signed(diff, p)}, beyond the tolerance {s.tolerance}" if mismatch else "")))
    if type_note:
        out["balanceExplanation"] += f" ({type_note})"
    filled = out["newBalanceFilled"]
    exp_neg, act_neg = expected < 0, new is not None and round_money(new, p) < 0
    reason = "both" if exp_neg and act_neg else "expected<0" if exp_neg else "actual<0" if act_neg else None
    refused = row["outcome"] == "refused"
    out.update(overdraft=reason is not None, overdraftReason=reason,
               attemptedOverdraft=reason is not None and refused,
               overdraftExplanation=_overdraft_text(reason, refused, expected, new, p))
    pay = row["paymentBalance"]
    out["paymentBalanceNegative"] = pay is not None and round_money(pay, p) < 0
    if pay is None:
        out.update(inSync=None, syncExplanation="paymentBalance not logged (old-shape transaction)")
    else:
        gap = round_money(pay, p) - filled
        ok = not beyond(gap, s.tolerance)
        text = (f"paymentBalance {fmt(pay, p)} {'equals' if ok else 'differs from'} newBalance {fmt(filled, p)}"
                + ("" if ok else f" by {signed(gap, p)}"))
        if row.get("syncErrorLine") is not None:
            text += f"; the Lambda logged 'not in sync' at line {row['syncErrorLine']}"
        out.update(inSync=ok, syncExplanation=text)
    return out


def _direction(logged: str | None, old: Decimal, new: Decimal | None) -> tuple[str, bool, str]:
    """DEBIT or CREDIT; old-shape rows have no type, so it is read off the balance's move."""
    if logged in ("DEBIT", "CREDIT"):
        return logged, False, ""
    if new is not None and new > old:
        return "CREDIT", True, "type not logged: CREDIT inferred, the balance went up"
    if new is not None and new < old:
        return "DEBIT", True, "type not logged: DEBIT inferred, the balance went down"
    return "DEBIT", True, "type not logged and the balance did not move: taken as DEBIT"


def _overdraft_text(reason: str | None, refused: bool, expected: Decimal, new: Decimal | None, p: int) -> str:
    if reason is None:
        return ""
    parts = {"expected<0": f"the expected balance {fmt(expected, p)} is negative",
             "actual<0": f"the logged newBalance {fmt(new, p)} is negative",
             "both": f"expected {fmt(expected, p)} and logged {fmt(new, p)} are both negative"}
    text = parts[reason]
    if refused:
        text += "; the Lambda refused this debit, so the subscription balance did not move (attempted overdraft)"
    return text


def _chain(rows: list[dict], tx: pl.DataFrame, s: Settings, last: dict[str, _Chain],
           last_pay: dict[str, _Chain]) -> None:
    """Continuity and the payment-balance chain, per user in ledger order."""
    columns = tx.select("id", "userId", "outcome", "oldBalance", "paymentBalance", "timestamp").iter_rows()
    for out, (tx_id, user, outcome, old, pay, _ts) in zip(rows, columns):
        p = out["places"]
        skipped = NOT_APPLIED.get(outcome)
        out["chainLink"] = skipped is None
        prev = last.get(user)
        out.update(continuityBreak=False, continuityFollows=None, continuityDelta=None, continuityReason="")
        if skipped:
            out["continuityReason"] = f"not a link of the balance chain: {skipped}"
        elif prev is None:
            out["continuityReason"] = "first transaction of this user in the logs"
        else:
            delta = round_money(old, p) - prev.balance
            out["continuityFollows"] = prev.tx_id
            out["continuityDelta"] = delta
            if beyond(delta, s.tolerance):
                out["continuityBreak"] = True
                out["continuityReason"] = (
                    f"oldBalance {fmt(old, p)} but the previous applied transaction {prev.tx_id} "
                    f"left {fmt(prev.balance, p)}: a jump of {signed(delta, p)}")
            else:
                out["continuityReason"] = f"follows {prev.tx_id}, which left {fmt(prev.balance, p)}"
        if not skipped:
            last[user] = _Chain(tx_id, out["newBalanceFilled"])
        _payment_chain(out, tx_id, user, outcome, pay, last_pay, s)


def _payment_chain(out: dict, tx_id: str, user: str, outcome: str, pay, last_pay: dict, s: Settings) -> None:
    """The wallet side: previous paymentBalance +/- (amount - vat) should give this one."""
    out.update(paymentChainBreak=False, paymentChainExpected=None, paymentChainReason="")
    if outcome == "already_synced":
        return
    if pay is None:  # a move without a logged wallet balance: the chain cannot be carried across it
        last_pay.pop(user, None)
        return
    p = out["places"]
    pay = round_money(pay, p)
    prev = last_pay.get(user)
    if prev is not None:
        move = out["netAmount"] if out["type"] == "CREDIT" else -out["netAmount"]
        expected = prev.balance + move
        out["paymentChainExpected"] = expected
        if beyond(pay - expected, s.tolerance):
            out["paymentChainBreak"] = True
            out["paymentChainReason"] = (
                f"paymentBalance {fmt(pay, p)} but {prev.tx_id} left {fmt(prev.balance, p)} "
                f"and this moves it by {signed(move, p)}: expected {fmt(expected, p)}")
    last_pay[user] = _Chain(tx_id, pay)


def _computed_schema(scale: int) -> dict:
    money = pl.Decimal(38, scale)
    return {
        "type": pl.String, "typeInferred": pl.Boolean, "netAmount": money, "expectedNewBalance": money,
        "places": pl.Int64, "newBalanceMissing": pl.Boolean, "vatMissing": pl.Boolean,
        "newBalanceFilled": money, "balanceDifference": money, "balanceMismatch": pl.Boolean,
        "suggestedAdjustment": money, "balanceExplanation": pl.String,
        "overdraft": pl.Boolean, "overdraftReason": pl.String, "attemptedOverdraft": pl.Boolean,
        "overdraftExplanation": pl.String, "paymentBalanceNegative": pl.Boolean,
        "inSync": pl.Boolean, "syncExplanation": pl.String,
        "chainLink": pl.Boolean, "continuityBreak": pl.Boolean, "continuityFollows": pl.String,
        "continuityDelta": money, "continuityReason": pl.String,
        "paymentChainBreak": pl.Boolean, "paymentChainExpected": money, "paymentChainReason": pl.String,
    }


# -- the oracle: the row-by-row findings ---------------------------------------------------------------


def row_by_row_anomalies(ledger: pl.DataFrame, events: pl.DataFrame, settings: Settings) -> pl.DataFrame:
    """The findings as the old code made them: every detector a loop over dict rows."""
    rows = ledger.to_dicts()
    found: list[dict] = []
    for detector in (_ledger_flags, _invalid_actions, _mad_spikes, _duplicate_ids, _rapid_manual_deductions,
                     _bursts, _rounding, _currency_mismatch):
        found += detector(rows, settings)
    found += _calendar(ledger, settings)
    found += _refusals_without_block(events, ledger)
    order = {"high": 0, "medium": 1, "low": 2}
    frame = pl.DataFrame(found, schema=ANOMALIES.schema())
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


# -- the oracle: the totals ----------------------------------------------------------------------------


def row_by_row_totals(ledger: pl.DataFrame, settings: Settings) -> dict[str, dict]:
    """The per-currency totals as the old code summed them, in a 60-digit context (see the module's text)."""
    out: dict[str, dict] = {}
    with localcontext() as ctx:
        ctx.prec = 60
        for cur in sorted(ledger["currency"].unique().to_list()):
            part = ledger.filter(pl.col("currency") == cur)
            p = settings.places(cur)
            debit = _sum(part.filter(pl.col("type") == "DEBIT")["amount"])
            credit = _sum(part.filter(pl.col("type") == "CREDIT")["amount"])
            applied = part.filter(pl.col("chainLink"))
            out[cur] = {
                "transactions": part.height,
                "users": part["userId"].n_unique(),
                "debit": fmt(debit, p),
                "credit": fmt(credit, p),
                "net": fmt(credit - debit, p),
                "debit_applied": fmt(_sum(applied.filter(pl.col("type") == "DEBIT")["amount"]), p),
                "credit_applied": fmt(_sum(applied.filter(pl.col("type") == "CREDIT")["amount"]), p),
                "places": p,
            }
    return out


def _sum(values: pl.Series) -> Decimal:
    """Exact sum in Python Decimal (a Polars Decimal sum is exact too, but this keeps the type plain)."""
    return sum((v for v in values.to_list() if v is not None), Decimal(0))


# -- the comparisons ------------------------------------------------------------------------------------


def assert_same_results(transactions: pl.DataFrame, events: pl.DataFrame, settings: Settings) -> pl.DataFrame:
    """The ledger, the findings and the totals of the new code against the oracle's."""
    sync_errors = events.filter(pl.col("kind") == "sync_error")
    ledger = build_ledger(transactions, sync_errors, settings)
    assert_frame_equal(ledger, row_by_row_ledger(transactions, sync_errors, settings))
    assert_frame_equal(detect_anomalies(ledger, events, settings), row_by_row_anomalies(ledger, events, settings))
    assert currency_totals(ledger, settings) == row_by_row_totals(ledger, settings)
    return ledger


#: Settings that move every threshold to where more rows cross it.
EAGER = Settings(tolerance=Decimal("0"), default_places=0, mad_threshold=Decimal("1.5"), burst_min_transactions=2,
                 burst_window_ms=60_000, rapid_window_seconds=3600).with_currency_places({"SAR": 2, "KWD": 0})


@pytest.mark.real_logs
def test_real_export(real_logs):
    parsed = read_logs(real_logs)
    for settings in (Settings(), EAGER):
        assert_same_results(parsed.transactions, parsed.events, settings)


@pytest.mark.parametrize("seed", [5, 29])
def test_generated_exports_with_faults(tmp_path, seed):
    generate_export(tmp_path, transactions=2500, seed=seed, faults=True)
    parsed = read_logs(tmp_path)
    ledger = assert_same_results(parsed.transactions, parsed.events, Settings())
    assert ledger["balanceMismatch"].any() and ledger["continuityBreak"].any()  # the faults are there to compare
    assert_same_results(parsed.transactions, parsed.events, EAGER)


# -- hypothesis: small exports with hostile values ---------------------------------------------------------

#: The largest amount the reader lets through. (Decimal's -x and abs(x) round to 28 digits: copy_negate, copy_abs.)
HUGE = Decimal("99999999999999999999.999999999999999999")
EDGES = [HUGE, HUGE.copy_negate(), Decimal("-0.000000000000000001"), Decimal("-0.00005"), Decimal("0.00005"),
         Decimal("0.0005"), Decimal("-0.0005"), Decimal("0"), Decimal("12345678901.123456789012345678"), Decimal("8"),
         Decimal("8.5")]
amounts = st.one_of(st.sampled_from(EDGES),
                    st.integers(0, 18).flatmap(lambda p: st.decimals(-1000, 1000, places=p)),
                    st.decimals(-HUGE, HUGE, places=18).filter(lambda x: x.copy_abs() <= HUGE))
settings_cases = st.builds(
    lambda tolerance, default, places, mad, burst: Settings(
        tolerance=tolerance, default_places=default, mad_threshold=mad, burst_min_transactions=burst,
        rapid_window_seconds=60).with_currency_places(places),
    st.sampled_from([Decimal("0"), Decimal("0.005"), Decimal("1")]), st.integers(0, 4),
    st.dictionaries(st.sampled_from(["BHD", "SAR", "AED"]), st.integers(0, 6)),
    st.sampled_from([Decimal("6"), Decimal("1"), Decimal("0")]), st.integers(1, 3))


@st.composite
def transaction_rows(draw, tolerance: Decimal):
    rows = []
    for i in range(draw(st.integers(1, 24))):
        shape = draw(st.sampled_from(["typed", "typed", "old"]))
        amount = draw(st.one_of(amounts, st.just(rows[-1]["amount"]) if rows else amounts))  # repeats: rapid, MAD
        vat, old = draw(st.one_of(st.none(), amounts)), draw(amounts)
        kind = draw(st.sampled_from(["DEBIT", "CREDIT"]))
        with localcontext() as ctx:
            ctx.prec = 60
            expected = old + (amount - (vat or 0)) * (1 if kind == "CREDIT" else -1)
            near = [n for d in (0, tolerance, -tolerance, tolerance + Decimal("0.0001"))
                    if (n := expected + d).copy_abs() <= HUGE]  # at the tolerance and just past it
        new = draw(st.one_of(st.none(), amounts, st.sampled_from(near) if near else amounts))
        rows.append(row(
            i=i, user=draw(st.sampled_from(["u1", "u2", "u3"])), type_=kind, shape=shape,
            amount=str(amount), vat=None if vat is None else str(vat), old=str(old),
            new=None if new is None else str(new), pay=draw(st.one_of(st.just("same"), st.none(), amounts.map(str))),
            currency=draw(st.sampled_from(["BHD", "SAR", "AED", "XYZ"])),
            outcome=draw(st.sampled_from(["applied", "applied", "unknown", "already_synced", "refused", "failed"])),
            tx_id=draw(st.sampled_from([None, None, "DUP", "DUP2"])),
            source=draw(st.sampled_from(["MANUAL_DEDUCTION", "SYSTEM"])),
            action=draw(st.sampled_from(["COMPENSATION", "DELIVERY_DEDUCTION", "INVAILID_ENTRY", "New 'one'\n"])),
            seconds=draw(st.sampled_from([0, 0.1, 0.25, 0.5, 30, 90, 15 * 3600, 2 * 86400 + 20 * 3600]))))
    return rows


def events_for(ids: list[str], draw) -> pl.DataFrame:
    rows = []
    for i in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["refusal", "sync_error"]))
        rows.append({**dict.fromkeys(NO_ERRORS.columns), "kind": kind, "sourceFile": "e.log", "line": 100 + i,
                     "timestamp": T0 + timedelta(seconds=i), "userId": draw(st.sampled_from(["u1", "u2", "u9", None])),
                     "transactionId": draw(st.sampled_from([*ids[:3], "GONE", None])),
                     "currentBalance": draw(st.one_of(st.none(), amounts)),
                     "subscriptionBalance": draw(st.one_of(st.none(), amounts))})
    return pl.concat([NO_ERRORS, pl.DataFrame(rows, schema=NO_ERRORS.schema)])


def in_pieces(frame: pl.DataFrame, cuts: list[int]) -> pl.DataFrame:
    """The same rows in several chunks, as the reader hands them over (Polars then meets empty pieces)."""
    edges = sorted({0, frame.height, *(c % (frame.height + 1) for c in cuts)})
    return pl.concat([frame.slice(a, b - a) for a, b in zip(edges, edges[1:])], rechunk=False)


@hsettings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(settings_cases, st.data())
def test_hostile_exports_give_the_oracles_results(settings, data):
    rows = data.draw(transaction_rows(settings.tolerance))
    tx = in_pieces(transactions(rows), data.draw(st.lists(st.integers(0, 30), max_size=3)))
    assert_same_results(tx, events_for([r["id"] for r in rows], data.draw), settings)


def test_an_empty_export():
    assert_same_results(transactions([]), NO_ERRORS, Settings())
