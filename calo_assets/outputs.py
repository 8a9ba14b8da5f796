"""Stage 6, outputs: put a finished analysis on disk, the same way for the CLI and for Dagster.

`write_all` writes the reports (report.xlsx, report.html, optionally
raw_parsed.csv) and `summary.json` into one folder; both entry points call it,
so a report made by the service and one made by the CLI cannot drift apart.
"""

from __future__ import annotations

import json
from pathlib import Path

from calo_assets.analysis import Analysis
from calo_assets.reports import write_reports

SUMMARY_FILE = "summary.json"


def summary_json(analysis: Analysis) -> str:
    """The run's figures as the JSON text written to summary.json."""
    return json.dumps(analysis.summary, indent=2, default=str) + "\n"


def write_summary(analysis: Analysis, path: Path) -> Path:
    """Write summary.json (the figures of `analysis.summary`) to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(summary_json(analysis), encoding="utf-8")
    return path


def write_all(analysis: Analysis, out_dir: Path, raw_csv: bool = False) -> dict[str, Path]:
    """Write every output of `analysis` into `out_dir`; returns {file name: path}."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {Path(p).name: Path(p) for p in write_reports(analysis, out_dir, raw_csv=raw_csv).values()}
    written[SUMMARY_FILE] = write_summary(analysis, out_dir / SUMMARY_FILE)
    return written
