"""Stage 5, findings: one row per anomaly, with type, severity, the transaction(s) and why.

The ledger's own flags (mismatch, continuity break, overdraft, out of sync) are
repeated here so one table lists everything a person should look at; the
pattern detectors (MAD spikes, bursts, rapid deductions, calendar, rounding)
each read a threshold from `Settings`.

Row checks are Polars filters over the ledger. The detectors whose arithmetic or text is Python's
own (medians and scores in a 28-digit Decimal context, seconds as floats, greedy bursts, `repr`)
first pick in Polars the few rows that can hold a finding, then decide in Python on those only.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from statistics import median

import polars as pl

from calo_assets.catalog import ANOMALIES, SEVERITY
from calo_assets.ledger import ENGINE
from calo_assets.money import Places, fmt, template
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
MAD_SCALE_FLOAT = float(MAD_SCALE)
MAD_MIN_TRANSACTIONS = 5
NOISE_PLACES = 6  # more decimal places than this in a logged amount is binary-float noise
#: What every finding reads off its ledger row.
FINDING_COLUMNS = ["id", "userId", "currency", "timestamp", "sourceFile", "line"]

#: Below this, a group's median and MAD are exact in Python's 28-digit context (18 places each).
MAD_PLAIN = Decimal(10) ** 7
#: The MAD screen keeps every group whose largest score, computed in binary floating point from exact
#: integers (relative error below 1e-15), comes within this fraction of the threshold.
MAD_MARGIN = 1e-9


def detect_anomalies(ledger: pl.DataFrame, events: pl.DataFrame, settings: Settings) -> pl.DataFrame:
    """Every finding, most severe first, then in ledger order (`ledger` as `build_ledger` returns it)."""
    rows = ledger.lazy().with_columns(
        pl.col("userId").ne_missing(pl.col("userId").shift(1)).cum_sum().alias("_user"),  # the ledger is by user
        (pl.col("type") == "CREDIT").alias("_credit"))
    checks = [*_ledger_flags(rows, Places.of(settings)), _missing_fields(rows), _invalid_actions(rows),
              _duplicate_ids(rows), *_calendar(rows, settings)]
    picked = pl.collect_all([_mad_candidates(rows, settings), _rapid_candidates(rows, settings),
                             _burst_candidates(rows, settings), _rounding_candidates(rows, settings),
                             _currency_candidates(rows), _refusals_without_block(events, rows)], engine=ENGINE)
    decided = [decide(frame, settings) for decide, frame in zip(
        (_mad_spikes, _rapid_manual_deductions, _bursts, _rounding, _currency_mismatch, _refused_elsewhere), picked)]
    order = {"high": 0, "medium": 1, "low": 2}
    frame = pl.concat([*pl.collect_all(checks, engine=ENGINE), *decided])
    return frame.sort([pl.col("severity").replace_strict(order, return_dtype=pl.Int8), "type", "userId",
                       "timestamp", "transactionId"], nulls_last=True, maintain_order=True)


def _findings(kind: str, rows: pl.LazyFrame | pl.DataFrame, details: pl.Expr,
              related: pl.Expr | None = None) -> pl.LazyFrame | pl.DataFrame:
    """One finding per row of `rows` (ledger rows), in their order."""
    return rows.select(
        pl.lit(kind).alias("type"), pl.lit(SEVERITY[kind]).alias("severity"), pl.col("id").alias("transactionId"),
        "userId", "currency", "timestamp", (pl.lit(None) if related is None else related).alias("relatedIds"),
        details.alias("details"), "sourceFile", "line").cast(ANOMALIES.schema())


def _findings_at(kind: str, rows: pl.DataFrame, found: list[tuple[int, str, str | None]]) -> pl.DataFrame:
    """Findings a Python detector made: (row number in `rows`, details, related ids)."""
    at, details, related = zip(*found) if found else ((), (), ())
    picked = rows[list(at)].with_columns(pl.Series("_details", details, dtype=pl.String),
                                         pl.Series("_related", related, dtype=pl.String))
    return _findings(kind, picked, pl.col("_details"), pl.col("_related"))


def _ledger_flags(rows: pl.LazyFrame, places: Places) -> list[pl.LazyFrame]:
    """The ledger's checks, one finding each, with the ledger's own explanation."""
    expected = pl.col("expectedNewBalance")
    refused = (rows.filter(pl.col("outcome") == "refused")
               .pipe(places.with_texts, {"_expected": (places.round(expected), expected < 0)}))
    return [
        _findings("BalanceMismatch", rows.filter(pl.col("balanceMismatch")), pl.col("balanceExplanation")),
        _findings("ContinuityBreak", rows.filter(pl.col("continuityBreak")), pl.col("continuityReason"),
                  pl.col("continuityFollows")),
        _findings("Overdraft", rows.filter(pl.col("overdraft")),
                  template("{}: {}", pl.col("overdraftReason"), pl.col("overdraftExplanation"))),
        _findings("OutOfSync", rows.filter(pl.col("inSync").not_()), pl.col("syncExplanation")),
        _findings("RefusedDebit", refused, template("the Lambda refused this transaction: it would have left "
                                                     "a negative balance (expected {})", pl.col("_expected"))),
        _findings("RepeatDelivery", rows.filter(pl.col("outcome") == "already_synced"), pl.lit(
            "delivered again after it was already synced by another listener; not applied a second time")),
    ]


def _missing_fields(rows: pl.LazyFrame) -> pl.LazyFrame:
    """Fields a row does not log, read off the row, not its shape."""
    absent = {"type": pl.col("typeInferred"), "source": pl.col("source").is_null(),
              "action": pl.col("action").is_null(), "paymentBalance": pl.col("paymentBalance").is_null(),
              "newBalance": pl.col("newBalanceMissing"), "vat": pl.col("vatMissing")}
    names = pl.concat_str([pl.when(missing).then(pl.lit(name)) for name, missing in absent.items()],
                          separator=", ", ignore_nulls=True)
    inferred = pl.when(pl.col("typeInferred")).then(template("; direction inferred as {}", pl.col("type")))
    return _findings("MissingField", rows.filter(pl.any_horizontal(absent.values())),
                     pl.concat_str(pl.lit("not logged: "), names, inferred, ignore_nulls=True))


def _invalid_actions(rows: pl.LazyFrame) -> pl.LazyFrame:
    """Actions outside the known vocabulary, or named invalid, quoted as Python quotes them."""
    action = pl.col("action")
    named = action.str.contains("INVALID", literal=True) | action.str.contains("INVAILID", literal=True)
    quoted = action.map_elements(repr, return_dtype=pl.String)  # Python's quoting, on the few flagged rows
    return _findings("InvalidAction", rows.filter(named | ~action.is_in(KNOWN_ACTIONS)),  # no action is neither
                     pl.when(named).then(template("action {} marks an invalid entry", quoted))
                     .otherwise(template("action {} is not in the known vocabulary", quoted)))


def _duplicate_ids(rows: pl.LazyFrame) -> pl.LazyFrame:
    """One transaction id applied more than once (repeat deliveries, which were not applied, aside)."""
    where = template("{}:{}", pl.col("sourceFile"), pl.col("line")).str.join("; ")
    applied = rows.filter(pl.col("outcome").is_in(["applied", "unknown"]))
    maybe = applied.filter(pl.col("id").hash().is_duplicated())  # 64-bit hashes first: cheap, and few collide
    repeated = (maybe.filter(pl.col("id").is_duplicated())
                .with_columns(template("transaction id applied {} times ({})", pl.len(), where).over("id")
                              .alias("_details"),
                              pl.col("requestId").str.join(",").over("id").alias("_related"),
                              (pl.int_range(pl.len()).over("id") > 0).alias("_again")))
    return _findings("DuplicateTxId", repeated.filter(pl.col("_again")), pl.col("_details"), pl.col("_related"))


def _calendar(rows: pl.LazyFrame, s: Settings) -> list[pl.LazyFrame]:
    """Postings outside business hours or on the weekend, in the currency's country's local time.

    Scheduled actions (the nightly delivery run) and rows without an action (the
    old shape, which cannot tell a batch from a person) are left out.
    """
    start, end = s.business_hours
    postings = rows.filter(pl.col("action").is_not_null() & ~pl.col("action").is_in(list(s.calendar_exempt_actions)))
    after_hours, weekend = [], []
    for currency, tz in s.time_zones.items():
        local = pl.col("timestamp").dt.convert_time_zone(tz)
        early = pl.when(local.dt.year() < 1000).then(local)  # Python writes year 999 as "999", Polars "0999"
        day = pl.coalesce(
            template("{} {}{}", early.dt.strftime("%a"), early.dt.year(), early.dt.strftime("-%m-%d %H:%M")),
            local.dt.strftime("%a %Y-%m-%d %H:%M"))
        when = template("{} {}", day, pl.lit(tz))
        part = postings.filter(pl.col("currency") == currency)
        outside = ~local.dt.hour().is_between(start, end, closed="left")
        after_hours.append(_findings("AfterHours", part.filter(outside),
                                     template("posted at {}, outside {}", when, pl.lit(f"{start:02d}:00-{end:02d}:00"))))
        weekend.append(_findings("Weekend", part.filter((local.dt.weekday() - 1).is_in(s.weekends.get(currency, ()))),
                                 template("posted on {}, a weekend day in {}", when, pl.lit(tz))))
    return after_hours + weekend


def _mad_candidates(rows: pl.LazyFrame, s: Settings) -> pl.LazyFrame:
    """The chain links of the (user, direction) groups that may hold a MAD spike.

    With every amount below `MAD_PLAIN`, a group's median and MAD are exact rationals in Python, and
    here exact integers (in 10^-18 units, doubled: 2*median, 2*|amount - median|). A group can hold a
    spike only if its largest deviation does; that score is computed in float from the exact integers
    and the group kept when it comes within `MAD_MARGIN` of the threshold, so no group with a finding
    is dropped. Groups with larger amounts are always kept. Python then decides exactly.
    """
    group = "_group"
    rows = rows.with_columns((2 * pl.col("_user") + pl.col("_credit")).alias(group))
    links = rows.filter(pl.col("chainLink")).select(group, "amount")
    plain = pl.col("amount").abs() < MAD_PLAIN
    n = pl.len()

    def middle(x: str) -> pl.Expr:  # the two middle order statistics of a group sorted by x, added
        return pl.col(x).get((n - 1) // 2) + pl.col(x).get(n // 2)

    units = links.select(group, pl.when(plain).then(pl.col("amount").to_physical()).otherwise(0).alias("_units"),
                         (~plain).alias("_wide")).sort(group, "_units")  # Int128, 10^-18
    spread = (units.with_columns((2 * pl.col("_units") - middle("_units").over(group)).abs().alias("_twiceDeviation"))
              .sort(group, "_twiceDeviation")
              .group_by(group).agg(n.alias("_n"), pl.col("_wide").any(), middle("_twiceDeviation").alias("_fourMad"),
                                   pl.col("_twiceDeviation").last().alias("_twiceLargest")))
    largest = 2 * MAD_SCALE_FLOAT * pl.col("_twiceLargest").cast(pl.Float64) / pl.col("_fourMad").cast(pl.Float64)
    near = (pl.col("_fourMad") > 0) & (largest >= float(s.mad_threshold) * (1 - MAD_MARGIN))
    kept = spread.filter((pl.col("_n") >= MAD_MIN_TRANSACTIONS)
                         & (pl.col("_wide") | near | pl.lit(s.mad_threshold <= 0))).select(group)
    return (rows.join(kept, on=group, how="semi", maintain_order="left").filter(pl.col("chainLink"))
            .select(*FINDING_COLUMNS, group, "type", "amount", "places"))


def _mad_spikes(links: pl.DataFrame, s: Settings) -> pl.DataFrame:
    """Amounts far from the user's usual for that direction, by median absolute deviation (Python's
    `statistics.median` and 28-digit Decimal context, as the texts show them)."""
    groups = links.with_row_index("_at").group_by("_group", maintain_order=True).agg(
        pl.col("type").first(), "_at", "amount", "places")
    found = []
    for kind, at, amounts, places in groups.select("type", "_at", "amount", "places").iter_rows():
        if len(amounts) < MAD_MIN_TRANSACTIONS:
            continue
        mid = median(amounts)
        mad = median(abs(a - mid) for a in amounts)
        if mad == 0:
            continue
        for row, amount, p in zip(at, amounts, places):
            score = MAD_SCALE * (amount - mid) / mad
            if abs(score) > s.mad_threshold:
                found.append((row, f"{kind} amount {fmt(amount, p)} vs this user's median {fmt(mid, p)} "
                                   f"(MAD {fmt(mad, p)}, {len(amounts)} transactions): robust z-score {score:.1f}, "
                                   f"threshold {s.mad_threshold}", None))
    return _findings_at("MADSpike", links, found)


def _rapid_candidates(rows: pl.LazyFrame, s: Settings) -> pl.LazyFrame:
    """Manual debits that follow the same user's same amount within the window (in ledger order)."""
    manual = (rows.filter((pl.col("source") == "MANUAL_DEDUCTION") & (pl.col("type") == "DEBIT") & pl.col("chainLink"))
              .select(*FINDING_COLUMNS, "amount", "places", "_user").with_row_index("_at"))
    same = (pl.col("_user") == pl.col("_user").shift(1)) & (pl.col("amount") == pl.col("amount").shift(1))
    repeats = (manual.select("_at", "_user", "amount", "timestamp", "id")
               .sort("_user", "amount", maintain_order=True)  # each (user, amount) together, in ledger order
               .select("_at", "timestamp", pl.when(same).then(pl.col("timestamp").shift(1)).alias("_previousTime"),
                       pl.when(same).then(pl.col("id").shift(1)).alias("_previous"))
               .filter(pl.col("timestamp") - pl.col("_previousTime") <= timedelta(seconds=s.rapid_window_seconds)))
    return manual.join(repeats.drop("timestamp"), on="_at").sort("_at")


def _rapid_manual_deductions(hits: pl.DataFrame, s: Settings) -> pl.DataFrame:
    """The repeats in words; the seconds are Python's float text, as they always were."""
    found = [(i, f"the same manual deduction of {fmt(r['amount'], r['places'])} {r['currency']} again "
                 f"{(r['timestamp'] - r['_previousTime']).total_seconds():.1f} s after {r['_previous']} "
                 f"(window {s.rapid_window_seconds} s)", r["_previous"])
             for i, r in enumerate(hits.iter_rows(named=True))]
    return _findings_at("RapidManualDeduction", hits, found)


def _burst_candidates(rows: pl.LazyFrame, s: Settings) -> pl.LazyFrame:
    """The rows of the users who have `burst_min_transactions` rows within the window somewhere."""
    ahead = s.burst_min_transactions - 1
    millis = pl.col("timestamp").to_physical()
    within = ((pl.col("_user").shift(-ahead) == pl.col("_user"))
              & (millis.shift(-ahead) - millis <= s.burst_window_ms)).fill_null(False)
    users = rows if ahead <= 0 else rows.join(rows.filter(within).select("_user").unique(), on="_user", how="semi",
                                              maintain_order="left")
    return users.select(*FINDING_COLUMNS, "_user", millis.alias("_millis"))


def _bursts(rows: pl.DataFrame, s: Settings) -> pl.DataFrame:
    """Several transactions of one user within the burst window: one finding per burst (greedy, in time order)."""
    window, least = s.burst_window_ms, s.burst_min_transactions
    users = rows.with_row_index("_at").group_by("_user", maintain_order=True).agg("_at", "_millis", "id")
    found = []
    for at, millis, ids in users.select("_at", "_millis", "id").iter_rows():
        i = 0
        while i < len(millis):
            j = i
            while j + 1 < len(millis) and millis[j + 1] - millis[i] <= window:
                j += 1
            if j - i + 1 >= least:
                span = timedelta(milliseconds=millis[j] - millis[i]).total_seconds() * 1000
                found.append((at[i], f"{j - i + 1} transactions of this user within {span:.0f} ms "
                                     f"(at least {least} within {window} ms)",
                              ",".join(ids[i + 1 : j + 1]) if j > i else None))
                i = j + 1
            else:
                i += 1
    return _findings_at("Burst", rows, found)


def _rounding_candidates(rows: pl.LazyFrame, s: Settings) -> pl.LazyFrame:
    """Rows whose amount or VAT has a digit past the currency's places or past `NOISE_PLACES`."""
    places = Places.of(s)

    def finer(name: str) -> pl.Expr:
        return places.choose(lambda p: pl.col(name).truncate(min(p, NOISE_PLACES)) != pl.col(name)).fill_null(False)

    return rows.filter(finer("amount") | finer("vat")).select(*FINDING_COLUMNS, "amount", "vat", "places")


def _rounding(rows: pl.DataFrame, s: Settings) -> pl.DataFrame:
    """Amounts with more places than their currency's, or float noise, as `Decimal.normalize()` writes them."""
    found = []
    for i, r in enumerate(rows.iter_rows(named=True)):
        for name in ("amount", "vat"):
            value = r[name]
            if value is None:
                continue
            places = -value.normalize().as_tuple().exponent  # normalize() rounds to 28 digits, as it did
            if places > NOISE_PLACES:
                found.append((i, f"{name} {value.normalize():f} carries binary-float noise ({places} decimal places)",
                              None))
            elif places > r["places"]:
                found.append((i, f"{name} {value.normalize():f} has {places} decimal places; "
                                 f"{r['currency']} uses {r['places']}", None))
    return _findings_at("RoundingPattern", rows, found)


def _currency_candidates(rows: pl.LazyFrame) -> pl.LazyFrame:
    """Each currency's first row, for the users seen in more than one."""
    return (rows.filter(pl.col("currency").n_unique().over("_user") > 1)
            .filter(pl.int_range(pl.len()).over("_user", "currency") == 0).select(*FINDING_COLUMNS, "_user"))


def _currency_mismatch(firsts: pl.DataFrame, s: Settings) -> pl.DataFrame:
    """One finding per user seen in several currencies, on the user's first row."""
    users = firsts.with_row_index("_at").group_by("_user", maintain_order=True).agg("_at", "currency", "id")
    found = [(at[0], "one user seen in several currencies: " + ", ".join(sorted(currencies)), ",".join(ids))
             for at, currencies, ids in users.select("_at", "currency", "id").iter_rows()]
    return _findings_at("CurrencyMismatch", firsts, found)


def _refusals_without_block(events: pl.DataFrame, rows: pl.LazyFrame) -> pl.LazyFrame:
    """Refusals that name a transaction no block in the logs holds: nothing else would show them."""
    refusals = events.lazy().filter(pl.col("kind") == "refusal")
    unknown = refusals.join(rows.select("id"), left_on="transactionId", right_on="id", how="anti",
                            maintain_order="left")  # a refusal naming no transaction is unknown too
    currency_of = (rows.join(unknown.select("userId"), on="userId", how="semi")
                   .group_by("userId").agg(pl.col("currency").last()))  # the user's last row's
    return (unknown.join(currency_of, on="userId", how="left", maintain_order="left")
            .select(pl.col("transactionId").alias("id"), "userId", "currency", "timestamp", "sourceFile", "line",
                    "currentBalance"))


def _refused_elsewhere(refusals: pl.DataFrame, s: Settings) -> pl.DataFrame:
    """The refusals without a block in words, with the balance as the Lambda logged it."""
    found = [(i, "the Lambda refused a debit (balance would go negative; current balance "
                 f"{_plain(balance)}) whose transaction block is not in these logs", None)
             for i, balance in enumerate(refusals.get_column("currentBalance"))]
    return _findings_at("RefusedDebit", refusals, found)


def _plain(value: Decimal | None) -> str:
    return "not logged" if value is None else f"{value.normalize():f}"
