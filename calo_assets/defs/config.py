"""The run config of an analysis: the tunables of `Settings`, as the launchpad shows them.

The defaults are read off `Settings()`, never retyped, so the CLI flags, the
service and the tests start from the same numbers. `to_settings` is the one
conversion to `Settings`; it refuses a bad value with a message naming the field.
"""

from dataclasses import replace
from decimal import Decimal, InvalidOperation

import dagster as dg
from pydantic import Field

from calo_assets.settings import Settings, parse_currency_places

DEFAULTS = Settings()
BUILT_IN_PLACES = ", ".join(f"{code}={places}" for code, places in sorted(DEFAULTS.currency_places.items()))


class AnalysisConfig(dg.Config):
    """Money rules and anomaly thresholds of a ledger build (the findings and report inherit them)."""

    tolerance: str = Field(default=str(DEFAULTS.tolerance),
                           description="Absolute tolerance when comparing a logged balance with the recomputed one")
    default_places: int = Field(default=DEFAULTS.default_places,
                                description="Decimal places of a currency without its own entry")
    currency_places: str = Field(default="", description=f"Places per currency on top of the built-in "
                                                         f"{BUILT_IN_PLACES}, e.g. KWD=3,OMR=3")
    excel_columns: str = Field(default=DEFAULTS.excel_columns,
                               description="Ledger sheet columns: 'accounting', 'full' or a JSON file of column names")
    mad_threshold: str = Field(default=str(DEFAULTS.mad_threshold),
                               description="Robust z-score above which an amount is a MADSpike")
    rapid_window_seconds: int = Field(default=DEFAULTS.rapid_window_seconds,
                                      description="Window of a RapidManualDeduction, in seconds")
    burst_window_ms: int = Field(default=DEFAULTS.burst_window_ms,
                                 description="Window of a Burst (several transactions of one user), in milliseconds")
    burst_min_transactions: int = Field(default=DEFAULTS.burst_min_transactions,
                                        description="Transactions within the window that make a Burst")

    def to_settings(self) -> Settings:
        return to_settings(self)


def refuse(message: str) -> dg.Failure:
    """A failure that no retry can cure (a bad value): the step fails at once."""
    return dg.Failure(message, allow_retries=False)


def to_settings(config: AnalysisConfig) -> Settings:
    """The Settings of a run; raises dg.Failure naming the field when a value is unusable."""
    def number(field: str) -> Decimal:
        text = getattr(config, field)
        try:
            value = Decimal(text)
        except InvalidOperation:
            raise refuse(f"{field} must be a number, got {text!r}") from None
        if not value.is_finite() or value < 0:
            raise refuse(f"{field} must be zero or more, got {text!r}")
        return value

    for field in ("rapid_window_seconds", "burst_window_ms", "burst_min_transactions"):
        if getattr(config, field) <= 0:
            raise refuse(f"{field} must be positive, got {getattr(config, field)}")
    if not 0 <= config.default_places <= 10:
        raise refuse(f"default_places must be between 0 and 10, got {config.default_places}")
    try:
        places = parse_currency_places(config.currency_places)
    except ValueError as exc:
        raise refuse(f"currency_places: {exc}") from None
    return replace(
        DEFAULTS,
        tolerance=number("tolerance"),
        default_places=config.default_places,
        excel_columns=config.excel_columns,
        mad_threshold=number("mad_threshold"),
        rapid_window_seconds=config.rapid_window_seconds,
        burst_window_ms=config.burst_window_ms,
        burst_min_transactions=config.burst_min_transactions,
    ).with_currency_places(places)
