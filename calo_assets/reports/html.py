"""report.html: one self-contained dashboard that opens offline, with nothing loaded from a network.

plotly.js is embedded once, as its smallest bundle that draws these charts
(`plotly_js`); the chart data travels as JSON made safe for a <script> element; every template is autoescaped, and labels taken from the
logs are HTML-escaped before Plotly (which reads a few tags in labels) sees
them. Log text is shown, never run. Tables show their first rows, sortable
and filterable in the page; the workbook holds the full lists.
"""

from __future__ import annotations

import html
import json
import secrets
from dataclasses import dataclass
from functools import cache
from importlib import resources
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import polars as pl
from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup, escape

from calo_assets.analysis import Analysis
from calo_assets.catalog import SEVERITY
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


@cache
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
        "completeness": tables.completeness(s),
        "anomaly_counts": _anomaly_counts(analysis),
        "tables": _tables(analysis),
        "quality": _quality(analysis),
        "chart_ids": list(CHART_TITLES),
        "chart_titles": CHART_TITLES,
        "charts_json": script_json(_charts(analysis)),
        "plotly_js": Markup(plotly_js()),
        "table_rows": TABLE_ROWS,
        "nonce": secrets.token_urlsafe(16),  # only the page's own scripts may run (Content-Security-Policy)
    }
    return environment().get_template("report.html.j2").render(**context)


@cache
def plotly_js() -> str:
    """plotly.js's "basic" bundle (bar, pie and scatter traces), vendored in templates/plotly/ with its licence.

    Every chart here is a bar chart, so the basic bundle draws them all, offline, in a quarter of the
    full bundle's 4.6 MB. It is plotly.js of the version plotly.py writes its figures for (a test holds
    the two together); templates/plotly/README.md says where it comes from and how to update it.
    """
    return resources.files("calo_assets").joinpath("templates/plotly/plotly-basic.min.js").read_text("utf-8")


def script_json(value) -> Markup:
    """JSON that cannot end its <script> element: <, > and & (and the JS line separators) escaped."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    for raw, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                         ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(raw, escaped)
    return Markup(text)


# -- tables ---------------------------------------------------------------------------------------

@dataclass
class Table:
    """A table as the template draws it: its columns, and its rows already rendered (escaped) as HTML."""

    id: str
    title: str
    intro: str
    columns: list[dict]
    body: Markup
    shown: int
    total: int
    note: str = ""


def _table(id_: str, title: str, intro: str, frame: pl.DataFrame, columns: list[str], *,
           mark: pl.Expr | None = None, full_list: str = "", limit: int | None = None,
           total: int | None = None) -> Table:
    """Render the first `limit` (default TABLE_ROWS) rows of `frame`; money in the row's currency places.

    Rows are rendered here rather than by a template macro: a few thousand cells through Jinja cost
    half a second, an f-string per cell a few milliseconds. Every text is escaped on the way.
    """
    total = frame.height if total is None else total
    shown = frame.head(TABLE_ROWS if limit is None else limit)
    marks = shown.select(mark.fill_null(False))[:, 0].to_list() if mark is not None else [False] * shown.height
    places = shown["places"].to_list() if "places" in shown.columns else [None] * shown.height  # no money
    schema = shown.schema
    cols = [{"label": f"{c} (UTC)" if isinstance(schema[c], pl.Datetime) else c,
             "numeric": schema[c].is_numeric(), "prose": c in PROSE, "where": c == "where",
             "ident": c in IDENTS} for c in columns]
    classes = [("num" if c["numeric"] else "") + (" prose" if c["prose"] else "") + (" where" if c["where"] else "")
               + (" ident" if c["ident"] else "") for c in cols]
    body = "".join(_row(values, p, marked, classes)
                   for values, p, marked in zip(shown.select(columns).iter_rows(), places, marks))
    note = ""
    if total > shown.height:
        note = (f"Showing {shown.height:,} of {total:,} rows. The full list is in {full_list}."
                if full_list else f"Showing {shown.height:,} of {total:,} rows.")
    return Table(id_, title, intro, cols, Markup(body), shown.height, total, note)


def _row(values: tuple, places: int | None, marked: bool, classes: list[str]) -> str:
    """One <tr>: each cell's text, the key the page sorts it on, a mark on a true flag."""
    cells = []
    for value, cls in zip(values, classes):
        text, sort, flag = _cell(value, places)
        key = "" if sort is None else f' data-sort="{sort}"'
        cells.append(f'<td class="{cls}{" yes" if flag else ""}"{key}>{text}</td>')
    return ("<tr class=\"mark\">" if marked else "<tr>") + "".join(cells) + "</tr>\n"


def _cell(value, places: int) -> tuple[str, object, bool]:
    """HTML of the display text, the key the page sorts on (None: its text), and whether it is a true flag.
    Only text can hold markup: numbers, amounts and times are written by us and need no escaping."""
    if value is None:
        return "", "", False
    if isinstance(value, Decimal):
        return f"{round_money(value, places):,f}", str(value), False
    if isinstance(value, bool):
        return ("yes" if value else "no"), int(value), value
    if isinstance(value, datetime):
        return _time(value), value.isoformat(), False
    if isinstance(value, int):
        return f"{value:,}", value, False
    return str(escape(value)), None, False


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


@cache
def plotly_white() -> dict:
    """plotly.py's "plotly_white" template as its figures embed it (plotly.js reads templates as JSON only).

    Kept in templates/plotly_white.json: building it with plotly.graph_objects costs half a second
    per run. A test holds the file to what the installed plotly.py makes.
    """
    return json.loads(resources.files("calo_assets").joinpath("templates/plotly_white.json").read_text("utf-8"))


def _figure(data: list[dict], *, axes: dict | None = None, nested: dict | None = None, **plain) -> dict:
    """A chart in the JSON plotly.py made for it before, key for key (the page's chart data is pinned by
    digest): the template, any subplot axes, the nested settings, then the plain ones."""
    base = _layout()
    layout = {"template": plotly_white(), **(axes or {}), "margin": base["margin"], "font": base["font"],
              "legend": base["legend"], **(nested or {}), "height": base["height"], "hovermode": base["hovermode"],
              "colorway": base["colorway"]}
    return {"data": data, "layout": layout | plain}


def _bar(panel: int | None = None, **props) -> dict:
    """A bar trace; `panel` (1, 2, ...) places it on a panel of stacked subplots."""
    trace = {key: props[key] for key in sorted(props)} | {"type": "bar"}
    if panel:
        trace |= {"xaxis": f"x{panel if panel > 1 else ''}", "yaxis": f"y{panel if panel > 1 else ''}"}
    return trace


def _panels(titles: list[str], spacing: float = 0.04) -> dict:
    """Axes for panels stacked top to bottom sharing the x axis, with the domains plotly.py's make_subplots
    computes (the same arithmetic, so the same floats)."""
    rows = len(titles)
    heights = [(1.0 - spacing * (rows - 1)) / rows] * rows
    axes = {}
    for r, title in enumerate(titles):
        n = "" if r == 0 else str(r + 1)
        bottom = sum(heights[:rows - 1 - r]) + (rows - 1 - r) * spacing
        low, high = (min(max(v, 0.0), 1.0) for v in (bottom, bottom + heights[-1 - r]))  # plotly's rounding guard
        x = {"anchor": f"y{n}", "domain": [0.0, 1.0]}
        if r < rows - 1:
            x |= {"matches": f"x{rows}", "showticklabels": False}
        axes |= {f"xaxis{n}": x, f"yaxis{n}": {"anchor": f"x{n}", "domain": [low, high], "title": {"text": title},
                                                "tickformat": "~s"}}
    return axes


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


def _days(column: pl.Series) -> list[str]:
    return column.dt.to_string("%Y-%m-%d").to_list()


def _net_chart(ledger: pl.DataFrame, colours: dict[str, str]) -> dict:
    """One panel per currency: amounts of different currencies never share an axis."""
    if ledger.is_empty():
        return _empty("No transactions")
    signed = pl.when(pl.col("type") == "CREDIT").then(pl.col("amount")).otherwise(-pl.col("amount"))
    daily = (ledger.lazy().group_by("currency", "day")
             .agg(net=signed.sum(), n=pl.len(), places=pl.col("places").first())
             .sort("currency", "day").collect(engine="streaming"))  # a tenth of the in-memory engine's memory
    currencies = daily["currency"].unique(maintain_order=True).to_list()
    bars = []
    for i, cur in enumerate(currencies, 1):
        part = daily.filter(pl.col("currency") == cur)
        p = part["places"][0]
        bars.append(_bar(i, x=_days(part["day"]), y=[float(v) for v in part["net"]], name=_esc(cur),
                         marker={"color": colours[cur]},
                         customdata=[[fmt(v, p), n] for v, n in zip(part["net"], part["n"])],
                         hovertemplate=f"{_esc(cur)} %{{x|%Y-%m-%d}}: net %{{customdata[0]}} "
                                       "(%{customdata[1]} transactions)<extra></extra>"))
    return _figure(bars, axes=_panels([_esc(c) for c in currencies]),
                   height=max(240, 40 + 120 * len(currencies)), showlegend=False, hovermode="x")


def _volume_chart(ledger: pl.DataFrame, colours: dict[str, str]) -> dict:
    if ledger.is_empty():
        return _empty("No transactions")
    daily = (ledger.lazy().group_by("currency", "day").agg(n=pl.len()).sort("currency", "day")
             .collect(engine="streaming"))
    bars = [_bar(x=_days(part["day"]), y=part["n"].to_list(), name=_esc(cur), marker={"color": colours[cur]},
                 hovertemplate=f"{_esc(cur)} %{{x|%Y-%m-%d}}: %{{y}} transactions<extra></extra>")
            for cur in daily["currency"].unique(maintain_order=True).to_list()
            for part in [daily.filter(pl.col("currency") == cur)]]
    return _figure(bars, barmode="stack", hovermode="x")


def _flags_chart(ledger: pl.DataFrame) -> dict:
    daily = (ledger.lazy().group_by("day").agg(**{k: e.sum() for k, e in tables.CHECK_FLAGS.items()}).sort("day")
             .collect(engine="streaming"))
    bars = [_bar(x=_days(daily["day"]), y=daily[key].to_list(), name=CHECK_LABELS[key][0],
                 marker={"color": CHECK_COLOURS[key]},
                 hovertemplate=f"{CHECK_LABELS[key][0]} %{{x|%Y-%m-%d}}: %{{y}}<extra></extra>")
            for key in tables.CHECK_FLAGS if daily[key].sum()]
    return _figure(bars, barmode="stack", hovermode="x") if bars else _empty("No row fails a check")


def _top_bars(frame: pl.DataFrame, value: str, what: str, colours: dict[str, str]) -> dict:
    """Horizontal bars, one per transaction, coloured by currency; hover shows the transaction id."""
    labels = [f"{i + 1}. {_esc(c)} …{_esc(t)[-6:]}" for i, (c, t) in enumerate(zip(frame["currency"], frame["id"]))]
    bars = []
    for cur in frame["currency"].unique(maintain_order=True).to_list():
        part = frame.with_columns(label=pl.Series(labels)).filter(pl.col("currency") == cur)
        bars.append(_bar(
            orientation="h", y=part["label"].to_list(), x=[float(v) for v in part[value]], name=_esc(cur),
            marker={"color": colours[cur]},
            customdata=[[_esc(t), _esc(u), fmt(v, p), "yes" if a else "no"] for t, u, v, p, a in
                        zip(part["id"], part["userId"], part[value], part["places"], part["attempted"])],
            hovertemplate=(f"transaction %{{customdata[0]}}<br>user %{{customdata[1]}}<br>{what} "
                           f"%{{customdata[2]}} {_esc(cur)}<br>attempted (refused): %{{customdata[3]}}"
                           "<extra></extra>")))
    return _figure(bars, nested={"yaxis": {"autorange": "reversed", "categoryorder": "array", "categoryarray": labels,
                                           "automargin": True},
                                 "xaxis": {"title": {"text": f"{what} (each in its currency)"}}},
                   height=max(240, 60 + 24 * frame.height), showlegend=False)


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
    bars = [_bar(orientation="h", y=[c["type"] for c in part], x=[c["count"] for c in part], name=level,
                 marker={"color": colour}, hovertemplate="%{y}: %{x} findings<extra>" + level + "</extra>")
            for level, colour in SEVERITY_COLOURS.items()
            for part in [[c for c in counts if c["severity"] == level]] if part]
    return _figure(bars, nested={"yaxis": {"autorange": "reversed", "automargin": True},
                                 "xaxis": {"title": {"text": "findings (log scale)"}, "type": "log", "dtick": 1}},
                   height=max(240, 60 + 22 * len(counts)))
