"""Stage 4, ledger: one row per transaction, every check recomputed and explained.

The checks are Polars expressions over whole columns, exact in decimal (see `money.Places`); the
result is ordered by (userId, timestamp, id, messageId). Every flag column has a companion text
column saying, with the numbers, why it is set or not. The chains (continuity, payment balance)
read, for each row, the last earlier row of the same user that carries the chain on.
"""

from __future__ import annotations

import polars as pl

from calo_assets.catalog import COMPUTED_MONEY, LEDGER
from calo_assets.money import NARROW, Places, exceeds, signed, template
from calo_assets.settings import Settings

ORDER = ["userId", "timestamp", "id", "messageId"]
#: Polars engine for the ledger's and the findings' plans: windows, gathers and sorts over the whole
#: ledger run faster in memory here, and the result comes back in one chunk (the streaming engine's
#: many chunks slow every later step, the reports' included).
ENGINE = "in-memory"
LOGGED_MONEY = ["amount", "vat", "oldBalance", "newBalance", "paymentBalance"]
#: Outcomes whose transaction did not move the subscription balance: they stay in
#: the ledger, marked, but are not links of the balance chain.
NOT_APPLIED = {"already_synced": "a repeat delivery (already synced elsewhere)",
               "refused": "refused by the Lambda (would go negative)",
               "failed": "the sync failed with an error"}


def build_ledger(transactions: pl.DataFrame, sync_errors: pl.DataFrame, settings: Settings) -> pl.DataFrame:
    """The ledger: the parsed transactions plus the recomputed checks, in deterministic order."""
    tx = _in_ledger_order(transactions)
    linked = (sync_errors.filter(pl.col("transactionId").is_not_null())
              .group_by("transactionId").agg(pl.col("line").first().alias("syncErrorLine"),
                                             pl.col("subscriptionBalance").first().alias("syncErrorSubscriptionBalance")))
    tx = tx.join(linked, left_on="id", right_on="transactionId", how="left", maintain_order="left")
    scale = money_scale(settings)
    wide = any(tx.select(pl.col(c).abs().max() >= NARROW).item() for c in LOGGED_MONEY)
    places = Places.of(settings, wide)
    ledger = (tx.lazy().rename({"type": "_loggedType"})
              .with_columns(pl.col("currency").replace_strict(settings.currency_places, default=settings.default_places,
                                                              return_dtype=pl.Int64).alias("places"),
                            *_direction())
              .pipe(places.with_sums, _sums())
              .with_columns(*_balance(settings, scale), *_chain_links())
              .with_columns(*_previous())
              .with_columns(*_flags(settings, scale))
              .pipe(places.with_texts, _common_texts(places))
              .with_columns(*_explanations(settings, flagged=False))
              .collect(engine=ENGINE))
    ledger = (_with_flagged_explanations(ledger, places, settings)
              .select(pl.exclude("^_.*$"))  # the working columns: rounded values, signs, texts
              .with_columns(pl.col(c).cast(pl.Decimal(38, scale)) for c in COMPUTED_MONEY))
    return ledger.select(LEDGER.names)


def _in_ledger_order(tx: pl.DataFrame) -> pl.DataFrame:
    """`tx.sort(ORDER, nulls_last=True)`, without comparing long id strings on every row.

    Users are ranked once (they are few) and rank and timestamp packed into one integer key, so one
    numeric sort orders almost every row; only rows sharing user and millisecond are then ordered by
    id and messageId (and, all four equal, kept in their order, as a stable sort would).
    """
    tx = tx.rechunk()  # gathering from one chunk is several times faster than from the reader's many
    users = tx.get_column("userId").drop_nulls().unique().sort()
    millis = pl.col("timestamp").to_physical()
    first, last = tx.select(millis.min().alias("first"), millis.max().alias("last")).row(0)
    span = 0 if first is None else last - first
    shift = (span + 1).bit_length()  # room for every time offset, and for "no time" (span + 1)
    wide = pl.Int64 if len(users).bit_length() + shift < 63 else pl.Int128
    rank = pl.col("userId").replace_strict(users, pl.int_range(len(users), dtype=wide, eager=True),
                                           default=len(users))  # no user: last
    key = tx.select(rank * 2**shift + (millis.cast(wide) - first).fill_null(span + 1)).to_series()
    rows = key.arg_sort()
    ordered = key.gather(rows)
    tied = (ordered == ordered.shift(1)) | (ordered == ordered.shift(-1))
    if tied.any():
        ties = (tx.select("id", "messageId").with_columns(key=key, row=pl.int_range(pl.len(), dtype=rows.dtype))
                .gather(rows.filter(tied)).sort(["key", "id", "messageId", "row"], nulls_last=True))
        rows = rows.scatter(tied.arg_true(), ties["row"])
    return tx.gather(rows)


def money_scale(settings: Settings) -> int:
    """Computed money columns hold every currency, so they carry the largest number of places."""
    return max([settings.default_places, *settings.currency_places.values()])


def _direction() -> list[pl.Expr]:
    """DEBIT or CREDIT; old-shape rows have no type, so it is read off the balance's move."""
    logged, old, new = pl.col("_loggedType"), pl.col("oldBalance"), pl.col("newBalance")
    typed = logged.is_in(["DEBIT", "CREDIT"]).fill_null(False)
    return [
        pl.when(typed).then(logged).when(new > old).then(pl.lit("CREDIT")).otherwise(pl.lit("DEBIT")).alias("type"),
        (~typed).alias("typeInferred"),
        pl.when(typed).then(pl.lit(None, pl.String))
        .when(new > old).then(pl.lit("type not logged: CREDIT inferred, the balance went up"))
        .when(new < old).then(pl.lit("type not logged: DEBIT inferred, the balance went down"))
        .otherwise(pl.lit("type not logged and the balance did not move: taken as DEBIT")).alias("_typeNote"),
    ]


def _sums() -> dict[str, list[pl.Expr]]:
    """Each logged amount, the expected balance and the net amount, to be rounded to the row's currency."""
    credit = pl.col("type") == "CREDIT"
    vat = pl.col("vat").fill_null(0)

    def toward(x: pl.Expr) -> pl.Expr:  # the balance's side of a move
        return pl.when(credit).then(x).otherwise(-x)

    return {"_old": [pl.col("oldBalance")], "_amount": [pl.col("amount")], "_vat": [vat],
            "_new": [pl.col("newBalance")], "_pay": [pl.col("paymentBalance")],
            "_expected": [pl.col("oldBalance"), toward(pl.col("amount")), toward(-vat)],
            "_net": [pl.col("amount"), -vat]}


def _balance(s: Settings, scale: int) -> list[pl.Expr]:
    """expected = old +/- (amount - vat); a missing newBalance is filled with it for continuity."""
    missing = pl.col("newBalance").is_null()
    difference = pl.col("_expected") - pl.col("_new")
    mismatch = (~missing & exceeds(difference, s.tolerance, scale)).fill_null(False)
    return [
        pl.col("_net").alias("netAmount"),
        pl.col("_expected").alias("expectedNewBalance"),
        missing.alias("newBalanceMissing"),
        pl.col("vat").is_null().alias("vatMissing"),
        pl.when(missing).then(pl.col("_expected")).otherwise(pl.col("_new")).alias("newBalanceFilled"),
        pl.when(missing).then(pl.col("_expectedNegative")).otherwise(pl.col("_newNegative")).alias("_filledNegative"),
        pl.when(missing).then(pl.lit(0)).otherwise(difference).alias("balanceDifference"),
        mismatch.alias("balanceMismatch"),
        pl.when(mismatch).then(difference).otherwise(pl.lit(0)).alias("suggestedAdjustment"),
    ]


def _chain_links() -> list[pl.Expr]:
    """Row numbers of the previous balance-chain link and of the previous wallet move, within the user."""
    row = pl.int_range(pl.len(), dtype=pl.Int64)
    user_start = pl.when(pl.col("userId").ne_missing(pl.col("userId").shift(1))).then(row).forward_fill()

    def previous(carries: pl.Expr) -> pl.Expr:  # the last earlier row of this user that carries the chain on
        last = pl.when(carries).then(row).shift(1).forward_fill()
        return pl.when(last >= user_start).then(last)

    link = ~pl.col("outcome").is_in(list(NOT_APPLIED)).fill_null(False)
    wallet_move = (pl.col("outcome") != "already_synced").fill_null(True)  # repeats never touch the wallet chain
    return [link.alias("chainLink"), previous(link).alias("_previousLink"),
            wallet_move.alias("_walletMove"), previous(wallet_move).alias("_previousMove")]


def _previous() -> list[pl.Expr]:
    """What the chains read off earlier rows, and the wallet's move (Python's signs of zero kept:
    -(0) is +0, and a zero sum is -0 only when both terms are -0)."""
    link, move = pl.col("_previousLink"), pl.col("_previousMove")
    credit, net = pl.col("type") == "CREDIT", pl.col("netAmount")
    return [
        pl.col("id").gather(link).alias("_follows"),
        pl.col("newBalanceFilled").gather(link).alias("_left"),
        pl.col("_filledNegative").gather(link).alias("_leftNegative"),
        pl.col("id").gather(move).alias("_before"),
        pl.col("_pay").gather(move).alias("_beforePay"),
        pl.col("_payNegative").gather(move).alias("_beforePayNegative"),
        pl.when(credit).then(net).otherwise(-net).alias("_move"),
        pl.when(credit).then(pl.col("_netNegative")).otherwise(net > 0).alias("_moveNegative"),
    ]


def _flags(s: Settings, scale: int) -> list[pl.Expr]:
    """Overdraft, sync, continuity and payment-chain checks."""
    expected_below = pl.col("_expected") < 0
    logged_below = (pl.col("_new") < 0).fill_null(False)
    reason = (pl.when(expected_below & logged_below).then(pl.lit("both"))
              .when(expected_below).then(pl.lit("expected<0")).when(logged_below).then(pl.lit("actual<0")))
    refused = (pl.col("outcome") == "refused").fill_null(False)
    gap = pl.col("_pay") - pl.col("newBalanceFilled")
    delta = pl.col("_old") - pl.col("_left")
    following = pl.col("chainLink") & pl.col("_previousLink").is_not_null()
    expected = pl.col("_beforePay") + pl.col("_move")
    checked = pl.col("_walletMove") & pl.col("_pay").is_not_null() & pl.col("_beforePay").is_not_null()
    return [
        reason.is_not_null().alias("overdraft"), reason.alias("overdraftReason"),
        (reason.is_not_null() & refused).alias("attemptedOverdraft"),
        (pl.col("_pay") < 0).fill_null(False).alias("paymentBalanceNegative"),
        gap.alias("_gap"),
        pl.when(pl.col("paymentBalance").is_not_null()).then(~exceeds(gap, s.tolerance, scale)).alias("inSync"),
        (following & exceeds(delta, s.tolerance, scale)).alias("continuityBreak"),
        pl.when(following).then(pl.col("_follows")).alias("continuityFollows"),
        pl.when(following).then(delta).alias("continuityDelta"),
        delta.alias("_delta"),
        (checked & exceeds(pl.col("_pay") - expected, s.tolerance, scale)).fill_null(False).alias("paymentChainBreak"),
        pl.when(checked).then(expected).alias("paymentChainExpected"),
        expected.alias("_chainExpected"),
        ((expected < 0) | ((expected == 0) & pl.col("_beforePayNegative") & pl.col("_moveNegative")))
        .alias("_chainExpectedNegative"),
    ]


#: Amounts every explanation shows, and those only the flagged rows' explanations show.
COMMON_TEXTS = ("old", "amount", "vat", "new", "pay", "expected", "left")
FLAGGED_TEXTS = ("difference", "gap", "delta", "move", "beforePay", "chainExpected")
#: Rows whose explanations show more amounts (a difference, a jump, a wallet move): few, worded apart.
FLAGGED = (pl.col("balanceMismatch") | pl.col("inSync").not_().fill_null(False) | pl.col("continuityBreak")
           | pl.col("overdraft") | pl.col("paymentChainBreak"))


def _common_texts(places: Places) -> dict[str, tuple[pl.Expr, pl.Expr]]:
    """Amounts every row's explanation shows, as (value rounded to the row's places, negative)."""
    own = {name: (pl.col(f"_{name}"), pl.col(f"_{name}Negative")) for name in COMMON_TEXTS if name != "left"}
    return {f"_{name}Text": value for name, value in {
        **own, "left": (places.round(pl.col("_left")), pl.col("_leftNegative"))}.items()}


def _flagged_texts(places: Places) -> dict[str, tuple[pl.Expr, pl.Expr]]:
    """Amounts shown only on the rows their flag is set on (null on the others, which leaves their part out)."""
    difference, gap, delta = pl.col("balanceDifference"), pl.col("_gap"), pl.col("_delta")
    mismatch, out_of_sync = pl.col("balanceMismatch"), pl.col("inSync").not_()
    jump, chain = pl.col("continuityBreak"), pl.col("paymentChainBreak")
    shown = {"difference": (mismatch, difference, difference < 0), "gap": (out_of_sync, gap, gap < 0),
             "delta": (jump, places.round(delta), delta < 0), "move": (chain, pl.col("_move"), pl.col("_moveNegative")),
             "beforePay": (chain, places.round(pl.col("_beforePay")), pl.col("_beforePayNegative")),
             "chainExpected": (chain, places.round(pl.col("_chainExpected")), pl.col("_chainExpectedNegative"))}
    return {f"_{name}Text": (pl.when(flag).then(value), negative) for name, (flag, value, negative) in shown.items()}


def _texts(flagged: bool) -> dict[str, pl.Expr]:
    """The amounts' texts by name (the flagged rows' extra ones too, when `flagged`)."""
    text = {name: pl.col(f"_{name}Text") for name in COMMON_TEXTS + (FLAGGED_TEXTS if flagged else ())}
    text["filled"] = pl.when(pl.col("newBalanceMissing")).then(text["expected"]).otherwise(text["new"])
    return text


def _with_flagged_explanations(ledger: pl.DataFrame, places: Places, s: Settings) -> pl.DataFrame:
    """The flagged rows worded in full: their extra amounts are turned into text for them alone."""
    rows = ledger.select(pl.arg_where(FLAGGED)).to_series()
    if rows.is_empty():
        return ledger
    worded = (ledger[rows].lazy().pipe(places.with_texts, _flagged_texts(places))
              .select(_explanations(s, flagged=True)).collect(engine=ENGINE))
    return ledger.with_columns(ledger.get_column(c).clone().scatter(rows, worded.get_column(c)) for c in worded.columns)


def _explanations(s: Settings, flagged: bool) -> list[pl.Expr]:
    """The checks in words, with the numbers; optional parts are null where they do not apply (and skipped).

    Unless `flagged`, the parts only flagged rows have (a mismatch, a gap, a jump, an overdraft, a broken
    wallet chain) are left out: those rows are worded again, in full, by `_with_flagged_explanations`.
    """
    text = _texts(flagged)
    return [_balance_explanation(text, s, flagged), _overdraft_explanation(text, flagged),
            _sync_explanation(text, flagged), _continuity_reason(text, flagged), _payment_chain_reason(text, flagged)]


def _balance_explanation(text: dict[str, pl.Expr], s: Settings, flagged: bool) -> pl.Expr:
    sign = pl.when(pl.col("type") == "CREDIT").then(pl.lit(" + (")).otherwise(pl.lit(" - ("))
    off = [template(": off by {}, beyond the tolerance {}", signed(text["difference"]), pl.lit(str(s.tolerance)))
           ] if flagged else []
    return pl.concat_str(
        pl.lit("expected "), text["expected"], pl.lit(" = "), text["old"], sign, text["amount"], pl.lit(" - "),
        text["vat"], pl.lit(")"),
        pl.when(pl.col("newBalanceMissing"))
        .then(pl.lit("; newBalance not logged, filled with the expected value for continuity")),
        template(", logged {}", text["new"]), *off,
        template(" ({})", pl.col("_typeNote")), ignore_nulls=True).alias("balanceExplanation")


def _overdraft_explanation(text: dict[str, pl.Expr], flagged: bool) -> pl.Expr:
    if not flagged:
        return pl.lit("").alias("overdraftExplanation")
    reason = pl.col("overdraftReason")
    expected, logged = text["expected"], text["new"]
    return pl.concat_str(
        pl.when(reason == "expected<0").then(template("the expected balance {} is negative", expected)),
        pl.when(reason == "actual<0").then(template("the logged newBalance {} is negative", logged)),
        pl.when(reason == "both").then(template("expected {} and logged {} are both negative", expected, logged)),
        pl.when(pl.col("attemptedOverdraft")).then(pl.lit(
            "; the Lambda refused this debit, so the subscription balance did not move (attempted overdraft)")),
        ignore_nulls=True).alias("overdraftExplanation")


def _sync_explanation(text: dict[str, pl.Expr], flagged: bool) -> pl.Expr:
    in_sync = pl.col("inSync")
    gap = [template(" by {}", signed(text["gap"]))] if flagged else []
    explanation = pl.concat_str(
        pl.lit("paymentBalance "), text["pay"],
        pl.when(in_sync).then(pl.lit(" equals newBalance ")).otherwise(pl.lit(" differs from newBalance ")),
        text["filled"], *gap,
        template("; the Lambda logged 'not in sync' at line {}", pl.col("syncErrorLine")), ignore_nulls=True)
    return (pl.when(pl.col("paymentBalance").is_not_null()).then(explanation)
            .otherwise(pl.lit("paymentBalance not logged (old-shape transaction)")).alias("syncExplanation"))


def _continuity_reason(text: dict[str, pl.Expr], flagged: bool) -> pl.Expr:
    follows = pl.col("_follows")
    not_a_link = {outcome: f"not a link of the balance chain: {why}" for outcome, why in NOT_APPLIED.items()}
    reason = (pl.when(pl.col("chainLink").not_()).then(pl.col("outcome").replace_strict(not_a_link, default=None))
              .when(pl.col("_previousLink").is_null()).then(pl.lit("first transaction of this user in the logs")))
    if flagged:
        reason = reason.when(pl.col("continuityBreak")).then(template(
            "oldBalance {} but the previous applied transaction {} left {}: a jump of {}",
            text["old"], follows, text["left"], signed(text["delta"])))
    return reason.otherwise(template("follows {}, which left {}", follows, text["left"])).alias("continuityReason")


def _payment_chain_reason(text: dict[str, pl.Expr], flagged: bool) -> pl.Expr:
    """The wallet side: previous paymentBalance +/- (amount - vat) should give this one."""
    if not flagged:
        return pl.lit("").alias("paymentChainReason")
    return template("paymentBalance {} but {} left {} and this moves it by {}: expected {}", text["pay"],
                    pl.col("_before"), text["beforePay"], signed(text["move"]), text["chainExpected"]
                    ).fill_null("").alias("paymentChainReason")
