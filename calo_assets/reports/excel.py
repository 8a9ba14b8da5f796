"""report.xlsx: the accountant's workbook, streamed with openpyxl's write-only mode.

Money cells are numbers rounded to the row's currency places and formatted
with them; timestamps are Excel datetimes in UTC; booleans are TRUE/FALSE;
log text is written so it can never run as a formula. Rows that fail a check
carry a fill. Write-only mode keeps a million-row ledger at a steady memory
footprint; each style is built once and shared by the cells that use it, which
is several times faster than setting fonts and fills cell by cell.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from pathlib import Path

import polars as pl
import polars.selectors as cs
from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.cell.cell import ERROR_CODES
from openpyxl.styles import Font, PatternFill
from openpyxl.utils import get_column_letter

from calo_assets.analysis import Analysis
from calo_assets.anomalies import SEVERITY
from calo_assets.money import round_money
from calo_assets.reports import ledger_columns, tables
from calo_assets.reports.safe_text import for_excel

#: Rows an Excel sheet holds, header included. A module constant so a test can lower it.
EXCEL_MAX_ROWS = 1_048_576
MAX_WIDTH = 60
MIN_WIDTH = 6
TIMESTAMP_FORMAT = "yyyy-mm-dd hh:mm:ss.000"
FLAG_FILL = PatternFill("solid", fgColor="FFFCE4D6")
HEADER_FILL = PatternFill("solid", fgColor="FFDDE3EA")
NOTE_FILL = PatternFill("solid", fgColor="FFFFF2CC")
CSV_NAME = "raw_parsed.csv"


@cache
def money_format(places: int) -> str:
    """`0.0000` for BHD, `0.000` for SAR, `0.00` for the rest: the currency's places, no more."""
    return "0." + "0" * places if places > 0 else "0"


def fits(rows: int) -> bool:
    """Whether `rows` data rows and a header fit in one sheet."""
    return rows + 1 <= EXCEL_MAX_ROWS


@dataclass
class _Table:
    """One data sheet: the frame, which columns to show, which rows to mark."""

    title: str
    frame: pl.DataFrame
    columns: list[str]
    flag: pl.Expr | None = None
    only_flagged_when_cut: bool = False  # the Ledger keeps its flagged rows when too long
    transactions: bool = False  # one row per transaction: the rows left out are in raw_parsed.csv
    note: str = ""

    def fit(self) -> _Table:
        """Cut the frame to the sheet's row limit, saying so in a note above the header."""
        total = self.frame.height
        if fits(total):
            return self
        room = EXCEL_MAX_ROWS - 2  # header and note
        frame = self.frame
        if self.only_flagged_when_cut and self.flag is not None:
            frame = frame.filter(self.flag)
            what = "only the rows that fail a check"
        else:
            what = "the first rows in the order of this sheet"
        frame = frame.head(room)
        self.note = (f"This sheet shows {frame.height:,} of {total:,} rows, {what}: an Excel sheet holds at most "
                     f"{EXCEL_MAX_ROWS:,} rows."
                     + (f" Every transaction, with its file and line, is in {CSV_NAME}." if self.transactions else ""))
        self.frame = frame
        return self


def write_workbook(analysis: Analysis, path: Path) -> Path:
    """Write report.xlsx to `path`: Summary, then the data sheets in the order below."""
    ledger = analysis.ledger
    parsed = analysis.parsed
    data = [
        _Table("Ledger", ledger, ledger_columns(analysis.settings.excel_columns), tables.flagged(),
               only_flagged_when_cut=True, transactions=True),
        _Table("Reconciliation", tables.reconciliation(ledger), [], tables.unreconciled(), transactions=True),
        _Table("ByUser", tables.by_user(ledger), [], pl.col("flaggedRows") > 0),
        _Table("BySource", tables.by_source(ledger), []),
        _Table("Overdrafts", tables.overdrafts(analysis), [], pl.col("attemptedOverdraft").fill_null(False)),
        _Table("Anomalies", analysis.anomalies, [], pl.col("severity") == "high"),
        _Table("SyncErrors", tables.sync_errors(analysis), []),
        _Table("Rejects", parsed.rejects.select("sourceFile", "line", "endLine", "kind", "reason", "excerpt",
                                                "timestamp", "requestId", "messageId"), []),
        _Table("DataQuality", parsed.files.select(
            "path", "status", "reason", "size", "sha256", "gzip", "truncated", "invalidUtf8", "longLines",
            "lines", "decompressedBytes", "records", "transactionBlocks"), [],
            pl.col("status").is_in(["skipped", "refused", "duplicate"]) | pl.col("truncated")),
    ]
    data = [t.fit() for t in data]
    wb = Workbook(write_only=True)
    styles = _Styles()
    _write_summary(wb.create_sheet("Summary"), analysis, styles, data)
    for t in data:
        _write_table(wb.create_sheet(t.title), t, styles)
    path = Path(path)
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial")
    wb.save(partial)  # a reader never sees half a workbook; a blocked target fails cleanly on replace
    try:
        partial.replace(path)
    except OSError:
        partial.unlink(missing_ok=True)
        raise
    return path


class _Styles:
    """Cell styles built once per combination and copied onto each new cell."""

    def __init__(self) -> None:
        self._arrays: dict[tuple, object] = {}

    def cell(self, ws, value, number_format: str | None = None, fill: PatternFill | None = None,
             bold: bool = False, italic: bool = False, quote: bool = False) -> WriteOnlyCell:
        """A styled cell; text is always a string cell, never a formula or an error code."""
        key = (number_format, fill and fill.fgColor.rgb, bold, italic, quote)
        array = self._arrays.get(key)
        if array is None:
            proto = WriteOnlyCell(ws)
            if number_format:
                proto.number_format = number_format
            if fill is not None:
                proto.fill = fill
            if bold or italic:
                proto.font = Font(bold=bold, italic=italic)
            proto.quotePrefix = quote
            array = self._arrays[key] = proto._style  # openpyxl's style array (indices into the workbook's styles)
        cell = WriteOnlyCell(ws, value)
        cell._style = array  # shared: a written cell is never restyled
        if isinstance(value, str):
            cell.data_type = "s"
        return cell

    def text(self, ws, value: str, fill: PatternFill | None = None, bold: bool = False, italic: bool = False):
        """Log text made safe; a plain string (the fastest to write) when it needs no style."""
        text, formula_like = for_excel(value)
        quote = formula_like or text in ERROR_CODES
        if fill or bold or italic or quote:
            return self.cell(ws, text, fill=fill, bold=bold, italic=italic, quote=quote)
        return text


def _kind(dtype: pl.DataType) -> str:
    if isinstance(dtype, pl.Decimal):
        return "money"
    if isinstance(dtype, pl.Datetime):
        return "time"
    if dtype == pl.String:
        return "text"
    return "plain"


def _write_table(ws, t: _Table, styles: _Styles) -> None:
    """One data sheet: optional note, a frozen header with a filter, then the rows."""
    columns = t.columns or [c for c in t.frame.columns if c != "places"]
    frame = t.frame.with_columns(cs.datetime(time_zone="*").dt.replace_time_zone(None))  # values stay UTC
    kinds = [_kind(frame.schema[c]) for c in columns]
    headers = [f"{c} (UTC)" if k == "time" else c for c, k in zip(columns, kinds)]
    for i, width in enumerate(_widths(frame, columns, headers, kinds), 1):
        ws.column_dimensions[get_column_letter(i)].width = width
    header_row = 2 if t.note else 1
    ws.freeze_panes = f"A{header_row + 1}"
    ws.auto_filter.ref = f"A{header_row}:{get_column_letter(len(columns))}{header_row + frame.height}"
    if t.note:
        ws.append([styles.text(ws, t.note, fill=NOTE_FILL, italic=True)])
    ws.append([styles.text(ws, h, fill=HEADER_FILL, bold=True) for h in headers])
    places = frame["places"] if "places" in frame.columns else pl.repeat(None, frame.height, eager=True)  # no money
    marks = frame.select(t.flag)[:, 0] if t.flag is not None else pl.repeat(False, frame.height, eager=True)
    for values, p, marked in zip(frame.select(columns).iter_rows(), places, marks):
        fill = FLAG_FILL if marked else None
        row = []
        for value, kind in zip(values, kinds):
            if value is None:
                row.append(styles.cell(ws, None, fill=fill) if fill else None)
            elif kind == "money":
                row.append(styles.cell(ws, round_money(value, p), money_format(p), fill))
            elif kind == "time":
                row.append(styles.cell(ws, value, TIMESTAMP_FORMAT, fill))
            elif kind == "text":
                row.append(styles.text(ws, value, fill))
            else:
                row.append(styles.cell(ws, value, fill=fill) if fill else value)
        ws.append(row)


def _widths(frame: pl.DataFrame, columns: list[str], headers: list[str], kinds: list[str]) -> list[float]:
    """Column widths that fit header and content, capped so a long explanation does not fill the screen."""
    exprs = []
    for c, kind in zip(columns, kinds):
        if kind == "money":  # integer digits of the largest amount, sign, point and places
            exprs.append((pl.col(c).abs().max().cast(pl.Float64).fill_null(0) + 1).log10().ceil()
                         .cast(pl.Int64).alias(c) + 2 + pl.col("places").max().fill_null(2))
        elif kind == "time":
            exprs.append(pl.lit(23).alias(c))
        else:
            exprs.append(pl.col(c).cast(pl.String).str.len_chars().max().fill_null(0).alias(c))
    lengths = frame.select(exprs).row(0) if frame.height else [0] * len(columns)
    return [min(MAX_WIDTH, max(MIN_WIDTH, len(h) + 3, (n or 0) + 2)) for h, n in zip(headers, lengths)]


def _write_summary(ws, analysis: Analysis, styles: _Styles, data: list[_Table]) -> None:
    """What was read, the reconciliation, the figures per currency, the checks and the run's parameters."""
    s = analysis.summary
    rec = analysis.parsed.reconciliation()
    for col, width in zip("ABCDEFGHI", (46, 16, 10, 18, 18, 18, 18, 18, 8)):
        ws.column_dimensions[col].width = width

    def title(text: str) -> None:
        ws.append([])
        ws.append([styles.text(ws, text, fill=HEADER_FILL, bold=True)])

    def pairs(rows) -> None:
        for label, value, *note in rows:
            cell = styles.text(ws, value) if isinstance(value, str) else value
            ws.append([styles.text(ws, label), cell, *note])

    ws.append([styles.text(ws, "Calo Balance Analytics: balance-sync log report", bold=True)])
    pairs([("Input folder", analysis.input_label or "—"),
           ("Time of run (UTC)", styles.cell(ws, analysis.created_at.replace(tzinfo=None), TIMESTAMP_FORMAT)),
           ("Product version", analysis.version)])

    files = s["files"]
    title("What was read")
    pairs([("Files read", files["read"]), ("Files skipped (not logs; see DataQuality)", files["skipped"]),
           ("Files refused (over a size cap; see DataQuality)", files["refused"]),
           ("Duplicate files (same bytes, counted once)", files["duplicate"]),
           ("Truncated files (readable part kept)", files["truncated"]),
           ("Log records read", sum(s["records"].values())), ("Transactions", s["transactions"]),
           ("Users", s["users"]), ("Rejects (see Rejects)", s["rejects"]),
           ("Sync errors (see SyncErrors)", s["sync_errors"])])

    title("Reconciliation: every transaction block is accounted for")
    pairs([("Transaction blocks seen", rec["transaction_blocks_seen"]),
           ("= transactions in the ledger", rec["transactions"]),
           ("+ rejected blocks (see Rejects)", rec["rejected_blocks"]),
           ("+ duplicate blocks collapsed", rec["duplicate_blocks_collapsed"]),
           ("Reconciles", tables.reconciles(rec)),
           ("JSON-form transactions merged into their block", rec["json_forms_merged"]),
           ("Other rejects (not transaction blocks)", rec["other_rejects"])])

    title("Per currency: amounts as logged, never added across currencies")
    ws.append([styles.text(ws, h, fill=HEADER_FILL, bold=True) for h in (
        "currency", "transactions", "users", "debit", "credit", "net", "debit_applied", "credit_applied",
        "places")])
    for cur, figures in s["currencies"].items():
        p = figures["places"]
        money = [styles.cell(ws, Decimal(figures[k]), money_format(p))
                 for k in ("debit", "credit", "net", "debit_applied", "credit_applied")]
        ws.append([styles.text(ws, cur), figures["transactions"], figures["users"], *money, p])

    title("Outcomes")
    pairs([(name, count) for name, count in s["outcomes"].items()])
    title("Checks (rows marked in Ledger; details in Reconciliation, Overdrafts, SyncErrors)")
    pairs([(name, count) for name, count in s["checks"].items()])
    title("Anomalies by type (one row each in Anomalies)")
    pairs([(name, count, SEVERITY[name]) for name, count in s["anomalies"].items()])
    title("Records read, by kind")
    pairs(sorted(s["records"].items()))

    settings = analysis.settings
    title("Run parameters")
    pairs([("Tolerance (absolute, per comparison)", styles.cell(ws, settings.tolerance, "0.0########")),
           ("Decimals when the currency has no places of its own", settings.default_places),
           *[(f"Currency places: {cur}", p) for cur, p in sorted(settings.currency_places.items())],
           ("Ledger columns", settings.excel_columns),
           ("Time of run (UTC)", styles.cell(ws, analysis.created_at.replace(tzinfo=None), TIMESTAMP_FORMAT)),
           ("Input folder", analysis.input_label or "—"), ("Product version", analysis.version)])
    notes = [(t.title, t.note) for t in data if t.note]
    if notes:
        title("Sheets cut at Excel's row limit")
        pairs(notes)
