"""report.html: one self-contained dashboard that opens offline, with nothing loaded from a network.

plotly.js is embedded once; the chart data travels as JSON made safe for a
<script> element; every template is autoescaped, and labels taken from the
logs are HTML-escaped before Plotly (which reads a few tags in labels) sees
them. Log text is shown, never run. Tables show their first rows, sortable
and filterable in the page; the workbook holds the full lists.
"""

from __future__ import annotations

import html
import json
import secrets
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import plotly.graph_objects as go
import plotly.offline
import polars as pl
from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup
from plotly.subplots import make_subplots
from plotly.utils import PlotlyJSONEncoder

from calo_assets.analysis import Analysis
from calo_assets.anomalies import SEVERITY
from calo_assets.money import fmt, round_money
from calo_assets.reports import tables

#: Rows a table shows in the page; the workbook has them all.
TABLE_ROWS = 500
#: Findings shown per anomaly type, so a rare type is not pushed out by a frequent one.
ANOMALIES_PER_TYPE = 50
TOP_BARS = 15
CHECK_LABELS = {
    "balance_mismatch": ("Balance mismatches", "#mismatches"),
    "continuity_break": ("Continuity breaks", "#breaks"),
    "overdraft": ("Overdrafts", "#overdrafts"),
    "attempted_overdraft": ("Attempted overdrafts (refused)", "#overdrafts"),
    "out_of_sync": ("Payment balance out of sync", "#anomalies"),
    "payment_balance_negative": ("Negative payment balance", "#by-user"),
    "payment_chain_break": ("Payment-balance chain breaks", "#by-user"),
    "refused_debits": ("Debits refused by the Lambda", "#overdrafts"),
    "refusals_without_block": ("Refusals with no block in the logs", "#overdrafts"),
}
CHECK_FILTERS = {"out_of_sync": "OutOfSync"}
#: Columns of running text: these wrap, every other column keeps to one line.
PROSE = {"balanceExplanation", "continuityReason", "overdraftExplanation", "details", "syncExplanation", "reason",
         "excerpt", "path"}
#: Identifier columns, set in a narrow monospace face.
IDENTS = {"id", "userId", "transactionId", "continuityFollows"}
SEVERITY_COLOURS = {"high": "#c0392b", "medium": "#e08e0b", "low": "#7f8c8d"}
PALETTE = ["#2563eb", "#059669", "#d97706", "#7c3aed", "#db2777", "#0891b2", "#65a30d", "#dc2626"]
CHECK_COLOURS = {"balance_mismatch": "#b42318", "continuity_break": "#e8590c", "overdraft": "#7a271a",
                 "attempted_overdraft": "#c11574", "payment_balance_negative": "#6941c6",
                 "payment_chain_break": "#1570ef", "out_of_sync": "#98a2b3"}


def write_dashboard(analysis: Analysis, path: Path) -> Path:
    path = Path(path)
    path.write_text(render_dashboard(analysis), encoding="utf-8")
    return path


def environment() -> Environment:
    """The templates' environment: autoescaping on for every template, whatever its name."""
    env = Environment(loader=PackageLoader("calo_assets", "templates"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(n=lambda v: f"{v:,}", money=lambda text: f"{Decimal(text):,f}")
    return env


def render_dashboard(analysis: Analysis) -> str:
    s = analysis.summary
    ledger = analysis.ledger
    rec = s["reconciliation"]
    times = ledger["timestamp"]
    context = {
        "a": analysis, "s": s, "rec": rec,
        "reconciles": tables.reconciles(rec),
        "period": (_time(times.min()), _time(times.max())) if ledger.height else None,
        "run_at": analysis.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        "checks": [{"label": CHECK_LABELS[k][0], "href": CHECK_LABELS[k][1], "count": n,
                    "filter": CHECK_FILTERS.get(k, "")} for k, n in s["checks"].items()],
        "anomaly_counts": _anomaly_counts(analysis),
        "tables": _tables(analysis),
        "quality": _quality(analysis),
        "chart_ids": list(CHART_TITLES),
        "chart_titles": CHART_TITLES,
        "charts_json": script_json(_charts(analysis)),
        "plotly_js": Markup(plotly.offline.get_plotlyjs()),
        "table_rows": TABLE_ROWS,
        "nonce": secrets.token_urlsafe(16),  # only the page's own scripts may run (Content-Security-Policy)
    }
    return environment().get_template("report.html.j2").render(**context)


def script_json(value) -> Markup:
    """JSON that cannot end its <script> element: <, > and & (and the JS line separators) escaped."""
    text = json.dumps(value, cls=PlotlyJSONEncoder, ensure_ascii=False, separators=(",", ":"))
    for raw, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                         ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(raw, escaped)
    return Markup(text)


# -- tables ---------------------------------------------------------------------------------------

@dataclass
class Table:
    """A table as the template draws it: formatted cells, a sort key per cell, a mark per row."""

    id: str
    title: str
    intro: str
    columns: list[dict]
    rows: list[dict]
    total: int
    note: str = ""


def _table(id_: str, title: str, intro: str, frame: pl.DataFrame, columns: list[str], *,
           mark: pl.Expr | None = None, full_list: str = "", limit: int | None = None,
           total: int | None = None) -> Table:
    """Format the first `limit` (default TABLE_ROWS) rows of `frame`; money in the row's currency places."""
    total = frame.height if total is None else total
    shown = frame.head(TABLE_ROWS if limit is None else limit)
    marks = shown.select(mark.fill_null(False))[:, 0].to_list() if mark is not None else [False] * shown.height
    places = shown["places"].to_list() if "places" in shown.columns else [None] * shown.height  # no money
    schema = shown.schema
    cols = [{"label": f"{c} (UTC)" if isinstance(schema[c], pl.Datetime) else c,
             "numeric": schema[c].is_numeric(), "prose": c in PROSE, "where": c == "where",
             "ident": c in IDENTS} for c in columns]
    rows = []
    for values, p, marked in zip(shown.select(columns).iter_rows(), places, marks):
        rows.append({"mark": marked, "cells": [_cell(v, p) for v in values]})
    note = ""
    if total > shown.height:
        note = (f"Showing {shown.height:,} of {total:,} rows. The full list is in {full_list}."
                if full_list else f"Showing {shown.height:,} of {total:,} rows.")
    return Table(id_, title, intro, cols, rows, total, note)


def _cell(value, places: int) -> dict:
    """Display text, the key the page sorts on, and whether it is a true flag."""
    cell = {"text": "", "sort": None, "flag": False}
    if value is None:
        cell["sort"] = ""
    elif isinstance(value, Decimal):
        cell.update(text=f"{round_money(value, places):,f}", sort=str(value))
    elif isinstance(value, bool):
        cell.update(text="yes" if value else "no", sort=int(value), flag=value)
    elif isinstance(value, datetime):
        cell.update(text=_time(value), sort=value.isoformat())
    elif isinstance(value, int):
        cell.update(text=f"{value:,}", sort=value)
    else:
        cell["text"] = str(value)
    return cell


def _where() -> pl.Expr:
    """`file:line`, the one place to look in the logs."""
    return (pl.col("sourceFile") + pl.lit(":") + pl.col("line").cast(pl.String)).alias("where")


def _time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else ""


def _tables(analysis: Analysis) -> dict[str, Table]:
    """The page's tables; each explanation follows the identifiers, readable without scrolling sideways."""
    ledger = analysis.ledger
    xlsx = "report.xlsx"
    overdrafts = tables.overdrafts(analysis)
    mismatches = tables.mismatches(ledger)
    breaks = tables.continuity_breaks(ledger)
    anomalies = analysis.anomalies.with_columns(
        _rank=pl.int_range(pl.len()).over("type")).filter(pl.col("_rank") < ANOMALIES_PER_TYPE)
    sync = tables.sync_errors(analysis)
    users = tables.by_user(ledger).sort("flaggedRows", "transactions", descending=True, maintain_order=True)
    where = _where()
    return {
        "overdrafts": _table(
            "overdrafts", "Overdrafts", "Rows whose expected or logged new balance is negative, deepest first; "
            "attempted ones (refused by the Lambda, so the balance did not move) are marked. Refusals whose "
            "transaction block is absent from the logs follow.",
            overdrafts.with_columns(where),
            ["record", "timestamp", "userId", "id", "currency", "overdraftExplanation", "action", "amount",
             "oldBalance", "newBalance", "expectedNewBalance", "overdraftReason", "attemptedOverdraft",
             "suggestedAdjustment", "currentBalance", "where"],
            mark=pl.col("attemptedOverdraft"), full_list=f"{xlsx} (Overdrafts)"),
        "mismatches": _table(
            "mismatches", "Balance mismatches", "The logged new balance differs from old ± (amount − vat) by more "
            f"than the tolerance ({analysis.settings.tolerance}); largest difference first.",
            mismatches.with_columns(where),
            ["timestamp", "userId", "id", "currency", "balanceExplanation", "type", "action", "amount", "vat",
             "oldBalance", "newBalance", "expectedNewBalance", "balanceDifference", "suggestedAdjustment", "where"],
            full_list=f"{xlsx} (Reconciliation)"),
        "breaks": _table(
            "breaks", "Continuity breaks", "A user's oldBalance does not continue the balance the previous applied "
            "transaction left; largest jump first.",
            breaks.with_columns(where),
            ["timestamp", "userId", "id", "currency", "continuityReason", "action", "outcome", "oldBalance",
             "continuityFollows", "continuityDelta", "where"],
            full_list=f"{xlsx} (Reconciliation)"),
        "anomalies": _table(
            "anomalies", "Anomalies", f"Every finding, most severe first: up to {ANOMALIES_PER_TYPE} per type here.",
            anomalies.with_columns(where),
            ["severity", "type", "transactionId", "userId", "currency", "timestamp", "details", "where"],
            mark=pl.col("severity") == "high", full_list=f"{xlsx} (Anomalies)", limit=anomalies.height,
            total=analysis.anomalies.height),
        "sync_errors": _table(
            "sync-errors", "Sync errors", "The Lambda's ERROR “Subscription balance and payment balance are not in "
            "sync”, beside the transaction it was logged for.",
            sync.with_columns(where),
            ["timestamp", "userId", "transactionId", "currency", "syncExplanation", "subscriptionBalance",
             "paymentBalance", "newBalance", "where"],
            full_list=f"{xlsx} (SyncErrors)"),
        "by_user": _table(
            "by-user", "By user", "Per user and currency: gross debit and credit as logged, net, the balance the "
            "last applied transaction left, and the checks failed; users with most flagged rows first.",
            users, ["userId", "currency", "transactions", "debit", "credit", "net", "closingBalance", "flaggedRows",
                    "mismatches", "continuityBreaks", "overdrafts", "outOfSync", "negativePaymentBalance",
                    "paymentChainBreaks"],
            mark=pl.col("flaggedRows") > 0, full_list=f"{xlsx} (ByUser)"),
        "by_source": _table(
            "by-source", "By source", "Per currency, source and direction (old-shape rows log no source).",
            tables.by_source(ledger), ["currency", "source", "type", "transactions", "amount", "vat", "netAmount"],
            full_list=f"{xlsx} (BySource)"),
    }


def _anomaly_counts(analysis: Analysis) -> list[dict]:
    order = {"high": 0, "medium": 1, "low": 2}
    rows = [{"type": t, "count": n, "severity": SEVERITY[t]}
            for t, n in analysis.summary["anomalies"].items()]
    return sorted(rows, key=lambda r: (order[r["severity"]], -r["count"], r["type"]))


def _quality(analysis: Analysis) -> dict:
    files = analysis.parsed.files
    odd = files.filter((pl.col("status") != "read") | pl.col("truncated") | (pl.col("invalidUtf8") > 0)
                       | (pl.col("longLines") > 0) | (pl.col("reason") != ""))
    rejects = analysis.parsed.rejects.with_columns(_where())
    return {
        "invalid_utf8": int(files["invalidUtf8"].sum() or 0),
        "long_lines": int(files["longLines"].sum() or 0),
        "files": _table("files", "Files not read cleanly", "Skipped, refused, duplicate or truncated files, and "
                        "files with invalid UTF-8 or over-long lines.", odd,
                        ["path", "status", "reason", "size", "gzip", "truncated", "invalidUtf8", "longLines",
                         "transactionBlocks"], full_list="report.xlsx (DataQuality)"),
        "rejects": _table("rejects", "Rejects", "Records that could not be read as what they claim to be, with "
                          "file, line and reason.", rejects, ["where", "kind", "reason", "excerpt"],
                          full_list="report.xlsx (Rejects)"),
        "records": sorted(analysis.summary["records"].items()),
    }


# -- charts ---------------------------------------------------------------------------------------

CHART_TITLES = {
    "chart-net": "Daily net flow per currency (credit − debit, as logged)",
    "chart-volume": "Transactions per day",
    "chart-flags": "Flags per day, by check",
    "chart-overdrafts": "Top overdrafts (lowest balance)",
    "chart-mismatches": "Top balance mismatches",
    "chart-anomalies": "Anomalies by type",
}


def _esc(value) -> str:
    """Log text for a Plotly label: Plotly reads a few HTML tags in labels, so none may come from a log."""
    return html.escape(str(value), quote=False)


def _layout(**extra) -> dict:
    base = {"template": "plotly_white", "margin": {"l": 56, "r": 16, "t": 12, "b": 40}, "height": 320,
            "font": {"family": "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", "size": 12},
            "legend": {"orientation": "h", "y": -0.18}, "hovermode": "closest", "colorway": PALETTE}
    return base | extra


def _empty(text: str) -> dict:
    """A chart with nothing to plot still draws, saying so."""
    return {"data": [], "layout": _layout(xaxis={"visible": False}, yaxis={"visible": False},
                                          annotations=[{"text": text, "showarrow": False, "font": {"size": 14}}])}


def _charts(analysis: Analysis) -> dict[str, dict]:
    ledger = analysis.ledger.with_columns(day=pl.col("timestamp").dt.date())
    colours = {cur: PALETTE[i % len(PALETTE)] for i, cur in enumerate(analysis.summary["currencies"])}
    return {"chart-net": _net_chart(ledger, colours), "chart-volume": _volume_chart(ledger, colours),
            "chart-flags": _flags_chart(ledger), "chart-overdrafts": _overdraft_chart(analysis, colours),
            "chart-mismatches": _mismatch_chart(analysis.ledger, colours), "chart-anomalies": _anomaly_chart(analysis)}


def _net_chart(ledger: pl.DataFrame, colours: dict[str, str]) -> dict:
    """One panel per currency: amounts of different currencies never share an axis."""
    if ledger.is_empty():
        return _empty("No transactions")
    signed = pl.when(pl.col("type") == "CREDIT").then(pl.col("amount")).otherwise(-pl.col("amount"))
    daily = (ledger.group_by("currency", "day").agg(net=signed.sum(), n=pl.len(), places=pl.col("places").first())
             .sort("currency", "day"))
    currencies = daily["currency"].unique(maintain_order=True).to_list()
    fig = make_subplots(rows=len(currencies), cols=1, shared_xaxes=True, vertical_spacing=0.04)
    for i, cur in enumerate(currencies, 1):
        part = daily.filter(pl.col("currency") == cur)
        p = part["places"][0]
        fig.add_bar(x=part["day"].to_list(), y=[float(v) for v in part["net"]], name=_esc(cur), row=i, col=1,
                    marker_color=colours[cur],
                    customdata=[[fmt(v, p), n] for v, n in zip(part["net"], part["n"])],
                    hovertemplate=f"{_esc(cur)} %{{x|%Y-%m-%d}}: net %{{customdata[0]}} "
                                  "(%{customdata[1]} transactions)<extra></extra>")
        fig.update_yaxes(title_text=_esc(cur), tickformat="~s", row=i, col=1)
    fig.update_layout(**_layout(height=max(240, 40 + 120 * len(currencies)), showlegend=False, hovermode="x"))
    return fig.to_plotly_json()


def _volume_chart(ledger: pl.DataFrame, colours: dict[str, str]) -> dict:
    if ledger.is_empty():
        return _empty("No transactions")
    daily = ledger.group_by("currency", "day").agg(n=pl.len()).sort("currency", "day")
    fig = go.Figure()
    for cur in daily["currency"].unique(maintain_order=True).to_list():
        part = daily.filter(pl.col("currency") == cur)
        fig.add_bar(x=part["day"].to_list(), y=part["n"].to_list(), name=_esc(cur), marker_color=colours[cur],
                    hovertemplate=f"{_esc(cur)} %{{x|%Y-%m-%d}}: %{{y}} transactions<extra></extra>")
    fig.update_layout(**_layout(barmode="stack", hovermode="x"))
    return fig.to_plotly_json()


def _flags_chart(ledger: pl.DataFrame) -> dict:
    daily = ledger.group_by("day").agg(**{k: e.sum() for k, e in tables.CHECK_FLAGS.items()}).sort("day")
    fig = go.Figure()
    for key in tables.CHECK_FLAGS:
        if daily[key].sum():
            fig.add_bar(x=daily["day"].to_list(), y=daily[key].to_list(), name=CHECK_LABELS[key][0],
                        marker_color=CHECK_COLOURS[key],
                        hovertemplate=f"{CHECK_LABELS[key][0]} %{{x|%Y-%m-%d}}: %{{y}}<extra></extra>")
    if not fig.data:
        return _empty("No row fails a check")
    fig.update_layout(**_layout(barmode="stack", hovermode="x"))
    return fig.to_plotly_json()


def _top_bars(frame: pl.DataFrame, value: str, what: str, colours: dict[str, str]) -> dict:
    """Horizontal bars, one per transaction, coloured by currency; hover shows the transaction id."""
    fig = go.Figure()
    labels = [f"{i + 1}. {_esc(c)} …{_esc(t)[-6:]}" for i, (c, t) in enumerate(zip(frame["currency"], frame["id"]))]
    for cur in frame["currency"].unique(maintain_order=True).to_list():
        part = frame.with_columns(label=pl.Series(labels)).filter(pl.col("currency") == cur)
        fig.add_bar(
            orientation="h", y=part["label"].to_list(), x=[float(v) for v in part[value]], name=_esc(cur),
            marker_color=colours[cur],
            customdata=[[_esc(t), _esc(u), fmt(v, p), "yes" if a else "no"] for t, u, v, p, a in
                        zip(part["id"], part["userId"], part[value], part["places"], part["attempted"])],
            hovertemplate=(f"transaction %{{customdata[0]}}<br>user %{{customdata[1]}}<br>{what} "
                           f"%{{customdata[2]}} {_esc(cur)}<br>attempted (refused): %{{customdata[3]}}<extra></extra>"))
    fig.update_layout(**_layout(yaxis={"autorange": "reversed", "categoryorder": "array", "categoryarray": labels,
                                       "automargin": True}, showlegend=False,
                                height=max(240, 60 + 24 * frame.height),
                                xaxis={"title": {"text": f"{what} (each in its currency)"}}))
    return fig.to_plotly_json()


def _overdraft_chart(analysis: Analysis, colours: dict[str, str]) -> dict:
    rows = (tables.overdrafts(analysis).filter(pl.col("record") == tables.LEDGER_ROW)
            .head(TOP_BARS).with_columns(attempted=pl.col("attemptedOverdraft")))
    return _top_bars(rows, "lowestBalance", "lowest balance", colours) if rows.height else _empty("No overdrafts")


def _mismatch_chart(ledger: pl.DataFrame, colours: dict[str, str]) -> dict:
    rows = tables.mismatches(ledger).head(TOP_BARS).with_columns(
        attempted=pl.col("outcome") == "refused")
    return (_top_bars(rows, "balanceDifference", "difference", colours) if rows.height
            else _empty("No balance mismatches"))


def _anomaly_chart(analysis: Analysis) -> dict:
    counts = [c for c in _anomaly_counts(analysis) if c["count"]]  # a log axis has no room for zero
    if not counts:
        return _empty("No anomalies")
    fig = go.Figure()
    for level, colour in SEVERITY_COLOURS.items():
        part = [c for c in counts if c["severity"] == level]
        if part:
            fig.add_bar(orientation="h", y=[c["type"] for c in part], x=[c["count"] for c in part], name=level,
                        marker_color=colour, hovertemplate="%{y}: %{x} findings<extra>" + level + "</extra>")
    fig.update_layout(**_layout(yaxis={"autorange": "reversed", "automargin": True},
                                height=max(240, 60 + 22 * len(counts)),
                                xaxis={"type": "log", "dtick": 1, "title": {"text": "findings (log scale)"}}))
    return fig.to_plotly_json()
