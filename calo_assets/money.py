"""Money rules: exact decimals, half-up rounding to the currency's places, explicit tolerance."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal


def quantum(places: int) -> Decimal:
    return Decimal(1).scaleb(-places)


def round_money(value: Decimal, places: int) -> Decimal:
    """Round half-up (half away from zero), as accountants do: 0.0005 -> 0.001 at 3 places."""
    return value.quantize(quantum(places), rounding=ROUND_HALF_UP)


def fmt(value: Decimal | None, places: int) -> str:
    """The amount as text with exactly the currency's places ("16.4000" for BHD)."""
    return "—" if value is None else f"{round_money(value, places):f}"


def signed(value: Decimal, places: int) -> str:
    text = fmt(value, places)
    return text if text.startswith("-") else "+" + text


def beyond(difference: Decimal, tolerance: Decimal) -> bool:
    """A difference counts only when strictly larger than the tolerance: exactly at it is fine."""
    return abs(difference) > tolerance
