"""Money rules: exact decimals, half-up rounding to the currency's places, explicit tolerance.

The Python functions work on one `Decimal`; `Places` and `exceeds` are the same rules as Polars
expressions over whole columns, exact for every logged amount (|x| < 1e20 with up to 18 places).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal, localcontext
from functools import reduce
from operator import add

import polars as pl

from calo_assets.settings import Settings

#: Whole units of a logged amount: up to 21 digits once three amounts are added.
WHOLE = pl.Decimal(38, 0)
HALF_UP = "half_away_from_zero"  # Polars' name for ROUND_HALF_UP


def quantum(places: int) -> Decimal:
    return Decimal(1).scaleb(-places)


def round_money(value: Decimal, places: int) -> Decimal:
    """Round half-up (half away from zero), as accountants do: 0.0005 -> 0.001 at 3 places."""
    return value.quantize(quantum(places), rounding=ROUND_HALF_UP)


def fmt(value: Decimal | None, places: int) -> str:
    """The amount as text with exactly the currency's places ("16.4000" for BHD)."""
    return "—" if value is None else f"{round_money(value, places):f}"


#: Below this, a sum of three logged amounts fits a Decimal(38, 18) (whose limit is 1e20).
NARROW = Decimal(10) ** 19


@dataclass(frozen=True)
class Places:
    """Half-up rounding and text at each row's own currency places, as Polars expressions.

    `column` holds each row's places, `values` every places value a row can have, `scale` the places
    of the result columns (the largest of `values`). Polars rounds to a fixed number of places, so a
    value is rounded once per places value and each row picks its own. `wide` says some logged
    amount is at least `NARROW`: sums are then split so they cannot overflow (see `with_sums`).

    Texts match `fmt` byte for byte, including Python's negative zero: `fmt(Decimal("-0.00001"), 4)`
    is "-0.0000", so every value travels with a `negative` flag (its sign before rounding).
    """

    column: pl.Expr
    values: tuple[int, ...]
    scale: int
    wide: bool = False

    @classmethod
    def of(cls, settings: Settings, wide: bool = False) -> Places:
        """The places of a run's currencies, for a ledger whose `places` column says each row's."""
        values = tuple(sorted({settings.default_places, *settings.currency_places.values()}))
        return cls(pl.col("places"), values, values[-1], wide)

    def choose(self, make: Callable[[int], pl.Expr]) -> pl.Expr:
        """`make(p)` for the rows whose currency has p places."""
        first, *rest = self.values
        if not rest:
            return make(first)
        chosen = pl.when(self.column == first).then(make(first))
        for places in rest:
            chosen = chosen.when(self.column == places).then(make(places))
        return chosen

    def round(self, value: pl.Expr) -> pl.Expr:
        """A value rounded half-up to the row's places, at `scale`."""
        return self.choose(lambda p: value.round(p, mode=HALF_UP)).cast(pl.Decimal(38, self.scale))

    def with_sums(self, frame: pl.LazyFrame, sums: dict[str, list[pl.Expr]]) -> pl.LazyFrame:
        """Per name, the exact sum of its terms (logged amounts) rounded half-up to the row's places, at
        `scale`, and `<name>Negative`: whether the sum is below zero (its sign before rounding).

        When `wide`, three amounts below 1e20 with 18 places can need 39 digits, one more than a Polars
        decimal holds, so each term is split into whole units and a fraction (same sign, |fraction| < 1);
        the halves are summed apart, the fractions' carry moved to the wholes, and both halves given
        the sign of the total. Rounding the fraction then rounds the total. Working columns
        `<name>Whole` and `<name>Fraction` stay in the frame.
        """
        if not self.wide:
            return frame.with_columns(
                *[self.round(reduce(add, terms)).alias(n) for n, terms in sums.items()],
                *[(reduce(add, terms) < 0).alias(f"{n}Negative") for n, terms in sums.items()])
        whole, fraction = {n: pl.col(f"{n}Whole") for n in sums}, {n: pl.col(f"{n}Fraction") for n in sums}
        frame = frame.with_columns(
            *[reduce(add, [t.truncate().cast(WHOLE) for t in terms]).alias(f"{n}Whole") for n, terms in sums.items()],
            *[reduce(add, [t - t.truncate() for t in terms]).alias(f"{n}Fraction") for n, terms in sums.items()])
        frame = frame.with_columns(
            *[(whole[n] + fraction[n].truncate().cast(WHOLE)).alias(f"{n}Whole") for n in sums],
            *[(fraction[n] - fraction[n].truncate()).alias(f"{n}Fraction") for n in sums])
        down = {n: (whole[n] > 0) & (fraction[n] < 0) for n in sums}
        up = {n: (whole[n] < 0) & (fraction[n] > 0) for n in sums}
        frame = frame.with_columns(
            *[pl.when(down[n]).then(whole[n] - 1).when(up[n]).then(whole[n] + 1).otherwise(whole[n]).alias(f"{n}Whole")
              for n in sums],
            *[pl.when(down[n]).then(fraction[n] + 1).when(up[n]).then(fraction[n] - 1).otherwise(fraction[n])
              .alias(f"{n}Fraction") for n in sums])
        money = pl.Decimal(38, self.scale)
        return frame.with_columns(
            *[(whole[n].cast(money) + self.round(fraction[n])).alias(n) for n in sums],
            *[((whole[n] < 0) | (fraction[n] < 0)).alias(f"{n}Negative") for n in sums])

    def with_texts(self, frame: pl.LazyFrame, values: dict[str, tuple[pl.Expr, pl.Expr]]) -> pl.LazyFrame:
        """Per name, `fmt(value, places)` of a (value, negative) pair whose value is at `scale` and already
        rounded to the row's places: exactly the row's places shown, and Python's negative zero
        ("-0.0000" for a negative value that rounds to zero, rare: added only where it occurs)."""
        frame = frame.with_columns(value.cast(pl.String).alias(n) for n, (value, _) in values.items())
        cut = (self.scale - self.column) + ((self.column == 0) & (self.scale > 0)).cast(pl.Int64)  # zeros and "."
        frame = frame.with_columns(pl.col(n).str.head(pl.col(n).str.len_bytes() - cut) for n in values)
        minus_zero = {n: negative & ~pl.col(n).str.starts_with("-") for n, (_, negative) in values.items()}
        return frame.with_columns(
            pl.when(minus_zero[n]).then(pl.concat_str(pl.lit("-"), pl.when(minus_zero[n]).then(pl.col(n))))
            .otherwise(pl.col(n)).alias(n) for n in values)


def template(text: str, *values: pl.Expr) -> pl.Expr:
    """`pl.format`: each "{}" of `text` replaced by a value; null where a value is null.

    (`pl.format` itself panics in Polars 2.1 when a filter leaves a streaming morsel empty.)
    """
    *words, last = text.split("{}")
    if len(words) != len(values):
        raise ValueError(f"{text!r} has {len(words)} placeholder(s), {len(values)} value(s) given")
    parts = []
    for word, value in zip(words, values):
        parts += [pl.lit(word), value] if word else [value]
    return pl.concat_str(*parts, pl.lit(last)) if last else pl.concat_str(*parts)


def signed(text: pl.Expr) -> pl.Expr:
    """An amount's text with its sign always written: "+0.1000", "-3.6000"."""
    return pl.concat_str(pl.when(text.str.starts_with("-")).then(pl.lit("")).otherwise(pl.lit("+")), text)


def exceeds(difference: pl.Expr, tolerance: Decimal, scale: int) -> pl.Expr:
    """A difference counts only when strictly larger than the tolerance: exactly at it is fine.

    The difference is a multiple of 10^-scale, so comparing it with the tolerance floored to that grid
    gives the same answer without a decimal wider than the column (differences stay below 1e22).
    """
    with localcontext() as ctx:
        ctx.prec = 60  # a tolerance of 1e24 at 10 places has 35 digits
        limit = min(tolerance, Decimal(10) ** 24).quantize(quantum(scale), rounding=ROUND_FLOOR)
    return difference.abs() > pl.lit(limit, dtype=pl.Decimal(38, scale))
