"""report.xlsx: the accountant's workbook, written by `xlsx` (sheet XML built by Polars, streamed into the zip).

Money cells are numbers rounded half-up to the row's currency places and formatted
with them; timestamps are Excel date-times in UTC with milliseconds; booleans are
TRUE/FALSE; log text is written so it can never run as a formula. Rows that fail
a check carry a fill. Rows are written a chunk at a time, so a million-row ledger
keeps a steady memory footprint.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from pathlib import Path

import polars as pl
import polars.selectors as cs

from calo_assets.analysis import Analysis
from calo_assets.catalog import SEVERITY
from calo_assets.reports import tables, xlsx
from calo_assets.reports.columns import ledger_columns
from calo_assets.reports.xlsx import Style

#: Rows an Excel sheet holds, header included. A module constant so a test can lower it.
EXCEL_MAX_ROWS = 1_048_576
MAX_WIDTH = 60
MIN_WIDTH = 6
TIMESTAMP_FORMAT = "yyyy-mm-dd hh:mm:ss.000"
FLAG_FILL = "FFFCE4D6"
HEADER_FILL = "FFDDE3EA"
NOTE_FILL = "FFFFF2CC"
ALERT_FILL, ALERT_FONT = "FFFFC7CE", "FF9C0006"
HEADER = Style(fill=HEADER_FILL, bold=True)
ALERT = Style(fill=ALERT_FILL, bold=True, font_color=ALERT_FONT)
TIMESTAMP = Style(TIMESTAMP_FORMAT)
CSV_NAME = "raw_parsed.csv"
#: Files named per missing drop on the Summary sheet; the count says how many there are.
FILES_NAMED = 3


@cache
def money_format(places: int) -> str:
    """`0.0000` for BHD, `0.000` for SAR, `0.00` for the rest: the currency's places, no more."""
    return "0." + "0" * places if places > 0 else "0"


FORMATS = xlsx.ColumnFormats(time_format=TIMESTAMP_FORMAT, money_format=money_format, mark_fill=FLAG_FILL)


def fits(rows: int) -> bool:
    """Whether `rows` data rows and a header fit in one sheet."""
    return rows + 1 <= EXCEL_MAX_ROWS


@dataclass
class _Table:
    """One data sheet: the frame, which columns to show, which rows to mark, which rows come first.

    The rows shown are `rows` (indices into the frame, in the sheet's order) or, when None, every row
    as it is: ordering and cutting never copy a frame, the writer gathers its rows a chunk at a time.
    """

    title: str
    frame: pl.DataFrame
    columns: list[str]
    flag: pl.Expr | None = None
    first: pl.Expr | None = None  # rows where it holds come first, each part in the frame's order
    only_flagged_when_cut: bool = False  # the Ledger keeps its flagged rows when too long
    transactions: bool = False  # one row per transaction: the rows left out are in raw_parsed.csv
    rows: pl.Series | None = None
    note: str = ""

    @property
    def shown(self) -> int:
        return self.frame.height if self.rows is None else self.rows.len()

    def fit(self) -> _Table:
        """Order the rows, then cut them to the sheet's row limit, saying so in a note above the header."""
        index = pl.int_range(pl.len(), dtype=pl.UInt32)
        if self.first is not None:
            self.rows = self.frame.select(index.sort_by(self.first, descending=True, maintain_order=True)).to_series()
        total = self.frame.height
        if fits(total):
            return self
        room = EXCEL_MAX_ROWS - 2  # header and note
        if self.only_flagged_when_cut and self.flag is not None:
            self.rows = self.frame.select(index.filter(self.flag)).to_series()
            what = "only the rows that fail a check"
        else:
            what = "the first rows in the order of this sheet"
        self.rows = (self.rows if self.rows is not None else self.frame.select(index).to_series()).head(room)
        self.note = (f"This sheet shows {self.shown:,} of {total:,} rows, {what}: an Excel sheet holds at most "
                     f"{EXCEL_MAX_ROWS:,} rows."
                     + (f" Every transaction, with its file and line, is in {CSV_NAME}." if self.transactions else ""))
        return self


def write_workbook(analysis: Analysis, path: Path) -> Path:
    """Write report.xlsx to `path`: Summary, then the data sheets in the order of `_data_sheets`.

    Each data sheet's frame is built, written and let go before the next, so only one is in
    memory at a time; the Summary, which names the sheets cut at the row limit, is written
    last and listed first.
    """
    cut = []
    with xlsx.Workbook(path) as book:
        for make in _data_sheets(analysis):
            table = make().fit()
            _write_table(book, table, analysis.settings.default_places)
            if table.note:
                cut.append((table.title, table.note))
            del table  # let its frame go before the next one is built
        with book.sheet("Summary", SUMMARY_WIDTHS, position=0) as ws:
            _write_summary(ws, analysis, cut)
    return Path(path)


def _data_sheets(analysis: Analysis) -> list[Callable[[], _Table]]:
    """How to build each data sheet, in the workbook's order."""
    ledger, parsed = analysis.ledger, analysis.parsed
    return [
        lambda: _Table("Ledger", ledger, ledger_columns(analysis.settings.excel_columns), tables.flagged(),
                       only_flagged_when_cut=True, transactions=True),
        lambda: _Table("Reconciliation", ledger.select(tables.RECONCILIATION_COLUMNS), [], tables.unreconciled(),
                       first=tables.unreconciled(), transactions=True),
        lambda: _Table("ByUser", tables.by_user(ledger), [], pl.col("flaggedRows") > 0),
        lambda: _Table("BySource", tables.by_source(ledger), []),
        lambda: _Table("Overdrafts", tables.overdrafts(analysis), [], pl.col("attemptedOverdraft").fill_null(False)),
        lambda: _Table("Anomalies", analysis.anomalies, [], pl.col("severity") == "high"),
        lambda: _Table("SyncErrors", tables.sync_errors(analysis), []),
        lambda: _Table("Rejects", parsed.rejects.select("sourceFile", "line", "endLine", "kind", "reason", "excerpt",
                                                        "timestamp", "requestId", "messageId"), []),
        lambda: _Table("DataQuality", parsed.files.select(
            "path", "status", "reason", "size", "sha256", "gzip", "truncated", "invalidUtf8", "longLines",
            "lines", "decompressedBytes", "records", "transactionBlocks"), [],
            pl.col("status").is_in(["skipped", "refused", "duplicate"]) | pl.col("truncated")),
    ]


def _write_table(book: xlsx.Workbook, t: _Table, default_places: int) -> None:
    """One data sheet: optional note, a frozen header with a filter, then the rows."""
    columns = t.columns or [c for c in t.frame.columns if c != "places"]
    frame = t.frame.with_columns(cs.datetime(time_zone="*").dt.replace_time_zone(None))  # values stay UTC
    kinds = [xlsx.kind(frame.schema[c]) for c in columns]
    headers = [f"{c} (UTC)" if k == "time" else c for c, k in zip(columns, kinds)]
    header_row = 2 if t.note else 1
    last = xlsx.column_letter(len(columns))
    with book.sheet(t.title, _widths(frame, columns, headers, kinds), frozen_rows=header_row,
                    filter_ref=f"A{header_row}:{last}{header_row + t.shown}",
                    rows=header_row + t.shown, columns=len(columns)) as ws:
        if t.note:
            ws.row([t.note], Style(fill=NOTE_FILL, italic=True))
        ws.row(headers, HEADER)
        places = frame["places"].fill_null(default_places) if "places" in frame.columns else None  # no money
        marks = frame.select(t.flag)[:, 0] if t.flag is not None else None
        ws.frame(frame.select(columns), FORMATS, places=places, marks=marks, rows=t.rows)


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


SUMMARY_WIDTHS = [46, 16, 10, 18, 18, 18, 18, 18, 8]


def _write_summary(ws: xlsx.SheetWriter, analysis: Analysis, cut: list[tuple[str, str]]) -> None:
    """What was read, the reconciliation, the figures per currency, the checks and the run's parameters."""
    s = analysis.summary
    rec = analysis.parsed.reconciliation()
    run_at = (analysis.created_at.replace(tzinfo=None), TIMESTAMP)

    def title(text: str) -> None:
        ws.row([])
        ws.row([text], HEADER)

    def pairs(rows) -> None:
        for row in rows:
            ws.row(list(row))

    ws.row([("Calo Balance Analytics: balance-sync log report", Style(bold=True))])
    pairs([("Input folder", analysis.input_label or "—"), ("Time of run (UTC)", run_at),
           ("Product version", analysis.version)])
    _write_completeness(ws, s, title)

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
    ws.row(["currency", "transactions", "users", "debit", "credit", "net", "debit_applied", "credit_applied",
            "places"], HEADER)
    for cur, figures in s["currencies"].items():
        p = figures["places"]
        money = [(Decimal(figures[k]), Style(money_format(p)))
                 for k in ("debit", "credit", "net", "debit_applied", "credit_applied")]
        ws.row([cur, figures["transactions"], figures["users"], *money, p])

    title("Outcomes")
    pairs(s["outcomes"].items())
    title("Checks (rows marked in Ledger; details in Reconciliation, Overdrafts, SyncErrors)")
    pairs(s["checks"].items())
    title("Anomalies by type (one row each in Anomalies)")
    pairs((name, count, SEVERITY[name]) for name, count in s["anomalies"].items())
    title("Records read, by kind")
    pairs(sorted(s["records"].items()))

    settings = analysis.settings
    title("Run parameters")
    pairs([("Tolerance (absolute, per comparison)", (settings.tolerance, Style("0.0########"))),
           ("Decimals when the currency has no places of its own", settings.default_places),
           *[(f"Currency places: {cur}", p) for cur, p in sorted(settings.currency_places.items())],
           ("Ledger columns", settings.excel_columns), ("Time of run (UTC)", run_at),
           ("Input folder", analysis.input_label or "—"), ("Product version", analysis.version)])
    if cut:
        title("Sheets cut at Excel's row limit")
        pairs(cut)


def _write_completeness(ws: xlsx.SheetWriter, s: dict, title) -> None:
    """Drops the report leaves out and the automation's recent failed runs; nothing when there are none."""
    state = tables.completeness(s)
    complete, missing, failures = state["complete"], state["missing"], state["failures"]
    if complete and not failures:
        return
    title("Completeness")
    ws.row(["Complete", "yes" if complete else "no"])
    if not complete:
        ws.row([(f"INCOMPLETE: this report leaves out {len(missing)} drop(s)", ALERT)])
        if missing:
            ws.row(["missing drop", "files", "first files", "reason"], HEADER)
        for drop in missing:
            files = list(drop.get("files") or [])
            ws.row([drop.get("drop"), len(files), ", ".join(files[:FILES_NAMED]), drop.get("reason")])
    if failures:
        ws.row(["failed run (UTC)", "job", "drop", "step", "error", "run id"], HEADER)
        for f in failures:
            ws.row([f.get("time"), f.get("job"), f.get("drop"), f.get("step"), f.get("error"), f.get("run_id")])
