"""Stage 6, outputs: put a finished analysis on disk, the same way for the CLI and for Dagster.

`write_all` writes the reports (report.xlsx, report.html, optionally
raw_parsed.csv) and `summary.json` into one folder; both entry points call it,
so a report made by the service and one made by the CLI cannot drift apart.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from calo_assets.analysis import Analysis
from calo_assets.reports import csv_export, excel, html

XLSX, HTML, CSV, SUMMARY_FILE = "report.xlsx", "report.html", "raw_parsed.csv", "summary.json"


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
    """Write every output of `analysis` into `out_dir`; returns {file name: path}.

    raw_parsed.csv is written when asked, and also when the ledger is too long for an
    Excel sheet, since the Ledger sheet then points to it for the rows it could not hold.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = {XLSX: excel.write_workbook, HTML: html.write_dashboard}
    if raw_csv or not excel.fits(analysis.ledger.height):
        jobs[CSV] = csv_export.write_raw_csv
    # the files are independent: written side by side, Polars' work in one overlaps the other's Python
    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = {name: pool.submit(write, analysis, out_dir / name) for name, write in jobs.items()}
        written = {name: Path(future.result()) for name, future in futures.items()}
    written[SUMMARY_FILE] = write_summary(analysis, out_dir / SUMMARY_FILE)
    return written
