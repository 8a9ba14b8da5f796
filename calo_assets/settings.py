"""One settings object for the whole product.

The CLI flags, the Dagster run config and the tests all build a `Settings`;
the defaults are written here once so the paths cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from decimal import Decimal

#: The seed's places per currency; any other currency uses `default_places`.
DEFAULT_CURRENCY_PLACES = {"SAR": 3, "BHD": 4}

#: Business calendar per currency: the country's time zone and its weekend days
#: (Python weekday numbers, Monday = 0). Gulf states rest Friday/Saturday, the
#: UAE Saturday/Sunday.
DEFAULT_TIME_ZONES = {
    "BHD": "Asia/Bahrain",
    "SAR": "Asia/Riyadh",
    "AED": "Asia/Dubai",
    "KWD": "Asia/Kuwait",
    "QAR": "Asia/Qatar",
}
DEFAULT_WEEKENDS = {"BHD": (4, 5), "SAR": (4, 5), "KWD": (4, 5), "QAR": (4, 5), "AED": (5, 6)}

MIB = 1024 * 1024


@dataclass(frozen=True)
class ReadLimits:
    """Bounds that keep hostile input (gzip bombs, endless lines) from filling memory."""

    max_file_bytes: int = 512 * MIB  # decompressed bytes per file
    max_run_bytes: int = 8 * 1024 * MIB  # decompressed bytes per run
    max_line_bytes: int = 1 * MIB  # one line longer than this is an error record


@dataclass(frozen=True)
class Settings:
    """Every tunable of a run: money rules, anomaly thresholds, business calendar."""

    tolerance: Decimal = Decimal("0.005")
    default_places: int = 2
    currency_places: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_CURRENCY_PLACES))
    excel_columns: str = "accounting"
    mad_threshold: Decimal = Decimal("6")
    rapid_window_seconds: int = 60
    burst_window_ms: int = 1000
    burst_min_transactions: int = 3
    business_hours: tuple[int, int] = (7, 22)  # local hours [start, end)
    # The nightly delivery run posts at local midnight by design: not an after-hours posting.
    calendar_exempt_actions: tuple[str, ...] = ("DELIVERY_DEDUCTION",)
    time_zones: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_TIME_ZONES))
    weekends: dict[str, tuple[int, ...]] = field(default_factory=lambda: dict(DEFAULT_WEEKENDS))
    limits: ReadLimits = field(default_factory=ReadLimits)

    def places(self, currency: str | None) -> int:
        """Decimal places used to round amounts of `currency`."""
        return self.currency_places.get(currency or "", self.default_places)

    def with_currency_places(self, overrides: dict[str, int]) -> Settings:
        return replace(self, currency_places={**self.currency_places, **overrides})


def parse_currency_places(text: str) -> dict[str, int]:
    """Parse `KWD=3,OMR=3` into {"KWD": 3, "OMR": 3}; raise ValueError with the bad part."""
    result: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        code, sep, places = part.partition("=")
        code = code.strip().upper()
        if not sep or not code.isalpha() or len(code) != 3:
            raise ValueError(f"expected CUR=N (a 3-letter code), got {part!r}")
        try:
            n = int(places)
        except ValueError:
            raise ValueError(f"places for {code} must be a whole number, got {places!r}") from None
        if not 0 <= n <= 10:
            raise ValueError(f"places for {code} must be between 0 and 10, got {n}")
        result[code] = n
    return result
