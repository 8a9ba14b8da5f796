"""Fingerprints of every output the CLI writes, to pin the figures across a rewrite of the code behind them.

A fingerprint holds what a person reads, never how it is encoded:
- `summary.json` in full (figures only; nothing in it depends on the time of the run);
- every sheet of report.xlsx as read back by openpyxl: its row count and, per column, a sha256 of the
  column's values (numbers as exact decimal text, date-times to the millisecond, trailing empty cells
  dropped); the Summary sheet in full, less the rows that name the time, the folder or the version;
- raw_parsed.csv: sha256 of its bytes;
- report.html: per section, a sha256 of its visible text, and per chart a sha256 of its data.

Digests, not values: the real export's rows never enter the repository. A digest per column is
enough to say which sheet and which column changed.

    python tests/golden.py   # rewrites tests/golden/*.json from the code as it is now
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from datetime import datetime
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path

from openpyxl import load_workbook

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "golden"
REAL_LOGS = HERE.parent.parent / "shared" / "real-logs"
#: The generated export pinned beside the real one: faults included, small enough for every test run.
GENERATED = {"transactions": 2500, "seed": 20241, "faults": True}
#: Summary-sheet rows that describe the run rather than the data.
RUN_ROWS = ("Time of run (UTC)", "Input folder", "Product version")


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()).hexdigest()


def cell(value):
    """A read-back cell as plain JSON: numbers as exact decimal text, date-times to the millisecond."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float | Decimal):
        number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
        return f"{number.normalize():f}" if number else "0"
    if isinstance(value, datetime):
        return value.isoformat(timespec="milliseconds")
    return str(value)


def sheet_rows(ws) -> list[list]:
    rows = []
    for values in ws.iter_rows(values_only=True):
        row = [cell(v) for v in values]
        while row and row[-1] is None:
            row.pop()
        rows.append(row)
    while rows and not rows[-1]:
        rows.pop()
    return rows


def workbook_fingerprint(path: Path) -> dict:
    wb = load_workbook(path, read_only=True)
    try:
        out = {"sheets": wb.sheetnames}
        for ws in wb.worksheets:
            rows = sheet_rows(ws)
            if ws.title == "Summary":
                out["Summary"] = [r for r in rows if not (r and r[0] in RUN_ROWS)]
                continue
            width = max((len(r) for r in rows), default=0)
            columns = [[r[i] if i < len(r) else None for r in rows] for i in range(width)]
            out[ws.title] = {"rows": len(rows),
                             "columns": {str(c[0]) if c else str(i): _digest(c) for i, c in enumerate(columns)}}
        return out
    finally:
        wb.close()


class _Sections(HTMLParser):
    """Visible text per <section id=...> (and the header), and the JSON of the chart data script.

    The navigation bar is left out: it lists sections, it holds no figure.
    """

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text: dict[str, list[str]] = {}
        self.charts = ""
        self._where: list[str] = ["page"]
        self._depth: list[int] = [0]
        self._skip = 0
        self._chart_script = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("script", "style", "nav"):
            self._skip += 1
            self._chart_script = attrs.get("id") == "chart-data"
            return
        if tag == "section" and attrs.get("id"):
            self._where.append(attrs["id"])
            self._depth.append(0)
        elif tag == "section":
            self._depth[-1] += 1

    def handle_endtag(self, tag):
        if tag in ("script", "style", "nav"):
            self._skip -= 1
            self._chart_script = False
        elif tag == "section":
            if self._depth[-1]:
                self._depth[-1] -= 1
            elif len(self._where) > 1:
                self._where.pop()
                self._depth.pop()

    def handle_data(self, data):
        if self._chart_script:
            self.charts += data
        if self._skip or not data.strip():
            return
        self.text.setdefault(self._where[-1], []).append(" ".join(data.split()))


def html_fingerprint(path: Path, input_label: str) -> dict:
    parser = _Sections()
    parser.feed(path.read_text(encoding="utf-8"))
    sections = {}
    for name, texts in parser.text.items():
        text = " ".join(texts).replace(input_label, "<input>")
        text = re.sub(r"run \d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} UTC", "run <time> UTC", text)
        text = re.sub(r"(version|Analytics) \S+", r"\1 <version>", text)
        sections[name] = _digest(text)
    charts = json.loads(parser.charts) if parser.charts.strip() else {}
    return {"sections": sections, "charts": {name: _digest(chart) for name, chart in charts.items()}}


def fingerprint(out: Path, input_label: str) -> dict:
    """The fingerprint of one CLI output folder; `input_label` (the LOG_DIR as given) is left out."""
    return {
        "summary": json.loads((out / "summary.json").read_text(encoding="utf-8")),
        "workbook": workbook_fingerprint(out / "report.xlsx"),
        "csv": hashlib.sha256((out / "raw_parsed.csv").read_bytes()).hexdigest(),
        "html": html_fingerprint(out / "report.html", input_label),
    }


def run_cli(log_dir: Path, out: Path, *extra: str) -> dict:
    """Run the CLI in-process (as `calo-logs-analyzer LOG_DIR --out OUT --raw-csv`) and fingerprint it."""
    from calo_assets.cli import main

    assert main([str(log_dir), "--out", str(out), "--raw-csv", *extra]) == 0
    return fingerprint(out, str(log_dir))


def generated_export(folder: Path) -> Path:
    from calo_testkit.generator import generate_export

    generate_export(folder, **GENERATED)
    return folder


def _write_all(scratch: Path) -> None:
    GOLDEN.mkdir(exist_ok=True)
    cases = {"generated": generated_export(scratch / "generated"),
             "generated-full": scratch / "generated"}
    if REAL_LOGS.is_dir():
        cases["real-logs"] = REAL_LOGS
    for name, folder in cases.items():
        extra = ("--excel-columns", "full") if name.endswith("-full") else ()
        result = run_cli(folder, scratch / f"out-{name}", *extra)
        (GOLDEN / f"{name}.json").write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n",
                                             encoding="utf-8")
        print(f"wrote {GOLDEN / f'{name}.json'}")


if __name__ == "__main__":
    import tempfile

    sys.path.insert(0, str(HERE.parent))
    with tempfile.TemporaryDirectory() as tmp:
        _write_all(Path(tmp))
