"""The whole flow from parsed logs to figures: the one path both the CLI and Dagster take."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from calo_assets import __version__
from calo_assets.anomalies import detect_anomalies
from calo_assets.ledger import build_ledger
from calo_assets.parsed import ParsedLogs
from calo_assets.reading import read_logs
from calo_assets.settings import Settings
from calo_assets.summary import build_summary


@dataclass(frozen=True)
class Coverage:
    """What a report leaves out, and what went wrong since the previous one.

    `missing_drops`: {"drop", "files", "reason"} for each drop of log files whose
    transactions are not in the report; `failures`: {"run_id", "job", "drop",
    "step", "error", "time"} for each failed run. The CLI reads the whole folder
    it is given, so its reports are complete and list no failure.
    """

    missing_drops: tuple[dict, ...] = ()
    failures: tuple[dict, ...] = ()

    @property
    def complete(self) -> bool:
        return not self.missing_drops

    def summary_keys(self) -> dict:
        """The keys summary.json (and so the workbook and the dashboard) gets from the coverage."""
        return {"complete": self.complete, "missing_drops": [dict(d) for d in self.missing_drops],
                "failures": [dict(f) for f in self.failures]}


@dataclass
class Analysis:
    """Everything a report needs: the parsed tables, the ledger, the findings and the figures."""

    parsed: ParsedLogs
    ledger: pl.DataFrame
    anomalies: pl.DataFrame
    summary: dict
    settings: Settings
    input_label: str = ""
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    version: str = __version__


def summarize(parsed: ParsedLogs, ledger: pl.DataFrame, anomalies: pl.DataFrame, settings: Settings,
              coverage: Coverage = Coverage()) -> dict:
    """The figures of summary.json, with whether the report is complete and what failed."""
    return {**build_summary(parsed, ledger, anomalies, settings), **coverage.summary_keys()}


def analyze(parsed: ParsedLogs, settings: Settings, input_label: str = "") -> Analysis:
    ledger = build_ledger(parsed.transactions, parsed.sync_errors, settings)
    anomalies = detect_anomalies(ledger, parsed.events, settings)
    return Analysis(parsed, ledger, anomalies, summarize(parsed, ledger, anomalies, settings), settings, input_label)


def analyze_folder(log_dir: Path, settings: Settings) -> Analysis:
    return analyze(read_logs(log_dir, settings.limits), settings, str(log_dir))
