"""Stage 4, ledger: one row per transaction, every check recomputed and explained.

The arithmetic is done row by row in Python `Decimal` (exact, and simple enough
for an accountant to follow); the result is a Polars frame ordered by
(userId, timestamp, id, messageId). Every flag column has a companion text
column saying, with the numbers, why it is set or not.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, localcontext

import polars as pl

from calo_assets.money import beyond, fmt, round_money, signed
from calo_assets.settings import Settings

ORDER = ["userId", "timestamp", "id", "messageId"]
#: Outcomes whose transaction did not move the subscription balance: they stay in
#: the ledger, marked, but are not links of the balance chain.
NOT_APPLIED = {"already_synced": "a repeat delivery (already synced elsewhere)",
               "refused": "refused by the Lambda (would go negative)",
               "failed": "the sync failed with an error"}
ZERO = Decimal(0)
CHUNK = 50_000


@dataclass
class _Chain:
    """The last link seen for one user: what the next oldBalance should start from."""

    tx_id: str
    balance: Decimal


def build_ledger(transactions: pl.DataFrame, sync_errors: pl.DataFrame, settings: Settings) -> pl.DataFrame:
    """The ledger: the parsed transactions plus the recomputed checks, in deterministic order."""
    tx = transactions.sort(ORDER, nulls_last=True)
    linked = (sync_errors.filter(pl.col("transactionId").is_not_null())
              .group_by("transactionId").agg(pl.col("line").first().alias("syncErrorLine"),
                                             pl.col("subscriptionBalance").first().alias("syncErrorSubscriptionBalance")))
    tx = tx.join(linked, left_on="id", right_on="transactionId", how="left", maintain_order="left")
    schema = _computed_schema(money_scale(settings))
    last: dict[str, _Chain] = {}  # per user, the chain link the next row follows
    last_pay: dict[str, _Chain] = {}
    parts = [pl.DataFrame(schema=schema)]
    with localcontext() as ctx:
        ctx.prec = 60  # 38 digits in, sums stay exact: the only rounding is the currency's half-up
        for start in range(0, tx.height, CHUNK):  # chunks keep the per-row dicts few on big ledgers
            chunk = tx.slice(start, CHUNK)
            rows = [_check(row, settings) for row in chunk.iter_rows(named=True)]
            _chain(rows, chunk, settings, last, last_pay)
            parts.append(pl.DataFrame(rows, schema=schema))
    ledger = pl.concat([tx.drop("type"), pl.concat(parts)], how="horizontal")
    return ledger.select([c for c in LEDGER_COLUMNS if c in ledger.columns]
                         + [c for c in ledger.columns if c not in LEDGER_COLUMNS])


def money_scale(settings: Settings) -> int:
    """Computed money columns hold every currency, so they carry the largest number of places."""
    return max([settings.default_places, *settings.currency_places.values()])


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


#: The ledger's column order: what an accountant reads first comes first.
LEDGER_COLUMNS = [
    "timestamp", "userId", "id", "currency", "type", "typeInferred", "source", "action", "outcome",
    "amount", "vat", "netAmount", "oldBalance", "newBalance", "newBalanceMissing", "newBalanceFilled",
    "expectedNewBalance", "balanceDifference", "balanceMismatch", "suggestedAdjustment", "balanceExplanation",
    "chainLink", "continuityBreak", "continuityFollows", "continuityDelta", "continuityReason",
    "overdraft", "overdraftReason", "attemptedOverdraft", "overdraftExplanation",
    "paymentBalance", "paymentBalanceNegative", "inSync", "syncExplanation", "syncErrorLine",
    "syncErrorSubscriptionBalance", "paymentChainBreak", "paymentChainExpected", "paymentChainReason",
    "places", "vatMissing", "shape", "jsonMerged", "userBalance", "paymentMethod", "paymentProvider",
    "brand", "kitchen", "metadata", "updatePaymentBalance",
    "sourceFile", "line", "endLine", "requestId", "messageId", "outcomeLine",
]
