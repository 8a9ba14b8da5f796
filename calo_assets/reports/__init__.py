"""Stage 6, reports: the workbook, the dashboard and the raw CSV rendered from one `Analysis`.

Pure rendering: nothing here knows about Dagster, and nothing recomputes a
figure; every number comes from the ledger, the findings or the summary.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from calo_assets.analysis import Analysis
from calo_assets.ledger import LEDGER_COLUMNS
from calo_assets.reports.tables import MONEY_COLUMNS

#: The columns an accountant needs to verify a ledger row by hand, in reading order.
ACCOUNTING_COLUMNS = [
    "timestamp", "userId", "id", "currency", "type", "typeInferred", "source", "action", "outcome",
    "amount", "vat", "oldBalance", "newBalance", "expectedNewBalance", "balanceMismatch",
    "suggestedAdjustment", "balanceExplanation", "continuityBreak", "continuityReason",
    "overdraft", "overdraftReason", "attemptedOverdraft", "paymentBalance", "inSync", "sourceFile", "line",
]
PRESETS = {"accounting": ACCOUNTING_COLUMNS, "full": LEDGER_COLUMNS}

XLSX, HTML, CSV = "report.xlsx", "report.html", "raw_parsed.csv"


def ledger_columns(preset: str) -> list[str]:
    """The Ledger sheet's columns for `accounting`, `full`, or a JSON file holding a list of names.

    Raises ValueError naming the valid presets or columns, so the CLI can refuse a
    bad option before any log is read. Money is never shown without its currency:
    `currency` is added in front of the first money column when the list lacks it.
    """
    if preset in PRESETS:
        return list(PRESETS[preset])
    path = Path(preset)
    if not path.is_file():
        raise ValueError(f"{preset!r} is neither a preset ({', '.join(PRESETS)}) nor a JSON file "
                         "listing column names")
    try:
        names = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{preset} is not readable JSON ({exc}); it must be a list of column names") from None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{preset} must hold a non-empty JSON list of column names, such as "
                         '["timestamp", "userId", "id", "currency", "amount"]')
    unknown = [n for n in names if n not in LEDGER_COLUMNS]
    if unknown:
        raise ValueError(f"unknown column(s) {', '.join(map(repr, unknown))} in {preset}; "
                         f"valid names: {', '.join(LEDGER_COLUMNS)}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"column(s) listed twice in {preset}: {', '.join(repeated)}")
    money = [i for i, n in enumerate(names) if n in MONEY_COLUMNS]
    if money and "currency" not in names:
        names.insert(money[0], "currency")
    return names


def write_reports(analysis: Analysis, out_dir: Path, *, raw_csv: bool = False) -> dict[str, Path]:
    """Write report.xlsx, report.html and (when asked) raw_parsed.csv; returns {file name: path}.

    raw_parsed.csv is also written when the ledger is too long for an Excel sheet,
    since the Ledger sheet then points to it for the rows it could not hold.
    """
    from calo_assets.reports import csv_export, excel, html

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = {XLSX: (excel.write_workbook, out_dir / XLSX), HTML: (html.write_dashboard, out_dir / HTML)}
    if raw_csv or not excel.fits(analysis.ledger.height):
        jobs[CSV] = (csv_export.write_raw_csv, out_dir / CSV)
    # the files are independent: written side by side, Polars' work in one overlaps the other's Python
    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = {name: pool.submit(write, analysis, path) for name, (write, path) in jobs.items()}
        return {name: future.result() for name, future in futures.items()}
