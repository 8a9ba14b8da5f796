"""The whole flow from parsed logs to figures: the one path both the CLI and Dagster take."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from calo_assets import __version__
from calo_assets.anomalies import detect_anomalies
from calo_assets.parsed import ParsedLogs
from calo_assets.reading import read_logs
from calo_assets.ledger import build_ledger
from calo_assets.settings import Settings
from calo_assets.summary import build_summary


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


def analyze(parsed: ParsedLogs, settings: Settings, input_label: str = "") -> Analysis:
    ledger = build_ledger(parsed.transactions, parsed.sync_errors, settings)
    anomalies = detect_anomalies(ledger, parsed.events, settings)
    summary = build_summary(parsed, ledger, anomalies, settings)
    return Analysis(parsed, ledger, anomalies, summary, settings, input_label)


def analyze_folder(log_dir: Path, settings: Settings) -> Analysis:
    return analyze(read_logs(log_dir, settings.limits), settings, str(log_dir))
