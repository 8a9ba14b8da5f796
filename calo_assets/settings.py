"""One settings object for the whole product, which checks itself.

The CLI flags and the Dagster run config are both made from `OPTIONS` (name,
flag, help, default read off `Settings()`), and both turn what a person typed
into a `Settings` with `Settings.from_options`, which refuses a bad value with
a message naming it. The defaults are written here once, so the two entry
points cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation

from calo_assets.reports.columns import ledger_columns

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

    def __post_init__(self) -> None:
        for name, value in (("tolerance", self.tolerance), ("mad_threshold", self.mad_threshold)):
            if not value.is_finite() or value < 0:
                raise SettingsError(name, f"must be zero or more, got {value}")
        for name in ("rapid_window_seconds", "burst_window_ms", "burst_min_transactions"):
            if getattr(self, name) <= 0:
                raise SettingsError(name, f"must be positive, got {getattr(self, name)}")
        if not 0 <= self.default_places <= MAX_PLACES:
            raise SettingsError("default_places", f"must be between 0 and {MAX_PLACES}, got {self.default_places}")
        for code, places in self.currency_places.items():
            if not 0 <= places <= MAX_PLACES:
                raise SettingsError("currency_places", f"places for {code} must be between 0 and {MAX_PLACES}, "
                                                       f"got {places}")

    def places(self, currency: str | None) -> int:
        """Decimal places used to round amounts of `currency`."""
        return self.currency_places.get(currency or "", self.default_places)

    def with_currency_places(self, overrides: dict[str, int]) -> Settings:
        return replace(self, currency_places={**self.currency_places, **overrides})

    @classmethod
    def from_options(cls, values: dict[str, str | int]) -> Settings:
        """The settings a person asked for, as text or whole numbers keyed by option name (see OPTIONS).

        Raises SettingsError naming the option when a value is unusable; options not given keep their default.
        """
        typed: dict = {}
        for name, value in values.items():
            if name not in OPTION_NAMES:
                raise SettingsError(name, "is not a setting")
            try:
                typed[name] = PARSERS.get(name, _whole)(value)
            except ValueError as exc:
                raise SettingsError(name, str(exc)) from None
        overrides = typed.pop("currency_places", {})
        return replace(cls(), **typed).with_currency_places(overrides)


class SettingsError(ValueError):
    """A setting that cannot be used; `name` is the option's name, the message says why."""

    def __init__(self, name: str, message: str):
        super().__init__(f"{name}: {message}")
        self.name, self.reason = name, message


@dataclass(frozen=True)
class Option:
    """A setting a person sets: by a CLI flag, or in the Dagster launchpad (the run config of `ledger`)."""

    name: str  # the Settings field
    flag: str
    kind: type  # str (decimals, lists) or int, as typed
    help: str
    metavar: str | None = None

    def default(self) -> str | int:
        value = getattr(Settings(), self.name)
        return "" if self.name == "currency_places" else value if self.kind is int else str(value)


MAX_PLACES = 10
_BUILT_IN = ", ".join(f"{code}={places}" for code, places in sorted(DEFAULT_CURRENCY_PLACES.items()))
#: Every setting a person may change, in the order the CLI's help and the launchpad list them.
OPTIONS = (
    Option("tolerance", "--tolerance", str, "absolute tolerance when comparing a logged balance with the recomputed "
                                            "one, after rounding; a difference exactly at it is not a mismatch", "T"),
    Option("default_places", "--decimals", int, "decimal places of a currency without its own", "N"),
    Option("currency_places", "--currency-decimals", str,
           f"places per currency on top of the built-in {_BUILT_IN}, e.g. KWD=3,OMR=3", "CUR=N,..."),
    Option("excel_columns", "--excel-columns", str,
           "Ledger sheet columns: 'accounting', 'full' or a JSON file listing column names", "accounting|full|FILE.json"),
    Option("mad_threshold", "--mad-threshold", str, "robust z-score above which an amount is a MADSpike", "X"),
    Option("rapid_window_seconds", "--rapid-window", int, "window of a RapidManualDeduction, in seconds", "SECONDS"),
    Option("burst_window_ms", "--burst-window", int, "window of a Burst (several transactions of one user), "
                                                     "in milliseconds", "MS"),
    Option("burst_min_transactions", "--burst-min", int, "transactions within the window that make a Burst", "N"),
)
OPTION_NAMES = {o.name for o in OPTIONS}


def _decimal(text: str) -> Decimal:
    try:
        value = Decimal(str(text).strip())
    except InvalidOperation:
        raise ValueError(f"must be a number, got {text!r}") from None
    if not value.is_finite():
        raise ValueError(f"must be a finite number, got {text!r}")
    return value


def _whole(value: str | int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"must be a whole number, got {value!r}") from None


def _columns(text: str) -> str:
    ledger_columns(text)  # raises ValueError naming the valid presets or columns
    return text


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
        if not 0 <= n <= MAX_PLACES:
            raise ValueError(f"places for {code} must be between 0 and {MAX_PLACES}, got {n}")
        result[code] = n
    return result


#: How an option's text becomes its value (whole numbers otherwise); each raises ValueError saying what is wrong.
PARSERS = {"tolerance": _decimal, "mad_threshold": _decimal, "currency_places": parse_currency_places,
           "excel_columns": _columns}
