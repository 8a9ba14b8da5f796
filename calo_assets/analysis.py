"""From parsed logs to the figures a report shows: the ledger, the findings and the summary, put together once.

The CLI calls `analyze`; the Dagster assets build the ledger and the findings as
steps of their own (the same `build_ledger` and `detect_anomalies`) and make the
report's `Analysis` with `analysis_of`, as `analyze` does.
"""

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


def analysis_of(parsed: ParsedLogs, ledger: pl.DataFrame, anomalies: pl.DataFrame, settings: Settings,
                input_label: str = "", coverage: Coverage = Coverage()) -> Analysis:
    """The analysis of a ledger and its findings: its figures, with whether the report is complete and what failed.

    The one way an `Analysis` is made: by `analyze` (the CLI), and by the `reports`
    asset from the ledger and findings the Dagster assets built and stored.
    """
    summary = {**build_summary(parsed, ledger, anomalies, settings), **coverage.summary_keys()}
    return Analysis(parsed, ledger, anomalies, summary, settings, input_label)


def analyze(parsed: ParsedLogs, settings: Settings, input_label: str = "") -> Analysis:
    """Ledger, findings and figures in one go (the CLI; the Dagster assets build each as a step)."""
    ledger = build_ledger(parsed.transactions, parsed.sync_errors, settings)
    anomalies = detect_anomalies(ledger, parsed.events, settings)
    return analysis_of(parsed, ledger, anomalies, settings, input_label)


def analyze_folder(log_dir: Path, settings: Settings) -> Analysis:
    return analyze(read_logs(log_dir, settings.limits), settings, str(log_dir))
