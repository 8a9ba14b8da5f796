"""report.html as text: escaped log text, nothing loaded from a network, plotly once, the summary's figures."""

import json
import re
from dataclasses import replace
from html.parser import HTMLParser

import pytest

from calo_assets.analysis import analyze_folder
from calo_assets.reports import html, tables
from calo_assets.settings import Settings
from tests.logbuilder import SCRIPT_ACTION, SCRIPT_USER, report_drop


@pytest.fixture(scope="module")
def analysis(tmp_path_factory):
    return analyze_folder(report_drop(tmp_path_factory.mktemp("logs")).parents[1], Settings())


@pytest.fixture(scope="module")
def page(analysis):
    return html.render_dashboard(analysis)


class Tags(HTMLParser):
    """Every start tag with its attributes; script and style bodies are data, as in a browser."""

    def __init__(self, text: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.data: dict[str, str] = {}
        self._open = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._open = dict(attrs).get("id")

    def handle_data(self, data):
        if self._open:
            self.data[self._open] = self.data.get(self._open, "") + data


def test_log_text_is_escaped_never_markup(page):
    assert SCRIPT_ACTION not in page and SCRIPT_USER not in page
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in page
    scripts = [a for tag, a in Tags(page).tags if tag == "script"]
    assert len(scripts) == 3  # the chart data, plotly.js, the page's own few lines
    assert not [a for tag, a in Tags(page).tags if tag == "img"]


def test_every_template_is_autoescaped():
    env = html.environment()
    assert env.autoescape is True
    assert env.from_string("{{ x }}").render(x="<b>") == "&lt;b&gt;"


def test_chart_data_cannot_close_its_script_and_labels_are_escaped(page):
    body = Tags(page).data["chart-data"]
    assert "<" not in body and ">" not in body and "&" not in body
    charts = json.loads(body)
    assert set(charts) == set(html.CHART_TITLES)
    text = json.dumps(charts)
    assert "&lt;img src=x onerror" in text  # the hostile user id, escaped for Plotly's label markup
    assert "<img" not in text
    escaped = '{"a":"\\u003c/script\\u003e\\u003cb\\u003e\\u0026\\u2028"}'
    assert html.script_json({"a": "</script><b>&\u2028"}) == escaped


def test_nothing_is_loaded_from_a_network(page):
    for tag, attrs in Tags(page).tags:
        for name in ("src", "href", "action", "data"):
            value = (attrs.get(name) or "").strip().lower()
            assert not value.startswith(("http:", "https:", "//")), (tag, name, value)
    assert not [t for t, a in Tags(page).tags if t == "link"]
    css = "".join(re.findall(r"<style>(.*?)</style>", page, re.S))
    assert "url(" not in css and "@import" not in css and "@font-face" not in css
    assert "default-src 'none'" in page  # and the browser is told to refuse any load anyway


def test_plotly_is_embedded_exactly_once_as_its_basic_bundle(page):
    assert page.count("* plotly.js (basic - minified) v") == 1 and page.count("* plotly.js") == 1
    assert "cdn.plot.ly/plotly" not in page.replace("https://cdn.plot.ly/un/", "")
    assert len(page.encode()) < 1_400_000  # the full bundle alone weighed 4.8 MB


def test_the_basic_bundle_draws_every_trace_the_charts_use(page):
    """plotly.js's basic bundle holds the bar, pie and scatter traces only; a chart of another type would
    need a bigger bundle (the browser test sees each chart drawn)."""
    charts = json.loads(Tags(page).data["chart-data"])
    used = {trace["type"] for chart in charts.values() for trace in chart["data"]}
    assert used and used <= {"bar", "pie", "scatter"}


def test_the_vendored_plotly_js_is_of_the_line_plotly_py_writes_its_figures_for():
    """If plotly is upgraded and this fails, update calo_assets/templates/plotly/ (its README says how)."""
    offline = pytest.importorskip("plotly.offline")
    vendored = re.match(r"/\*\*\n\* plotly\.js \(basic - minified\) v(\d+\.\d+)\.\d+\n", html.plotly_js())
    assert vendored.group(1) == ".".join(offline.get_plotlyjs_version().split(".")[:2])


def test_cards_show_the_summary_figures_per_currency(page, analysis):
    cards = re.findall(r'<article class="card" data-currency="(\w+)">(.*?)</article>', page, re.S)
    assert [c for c, _ in cards] == list(analysis.summary["currencies"])
    for cur, body in cards:
        figures = dict(re.findall(r'data-field="(\w+)" data-value="([^"]+)"', body))
        expected = analysis.summary["currencies"][cur]
        assert figures == {k: str(expected[k]) for k in ("transactions", "users", "debit", "credit", "net")}
    assert "68.1810" in dict(cards)["BHD"]  # BHD in its four places


def test_check_and_anomaly_counts_link_to_their_tables(page, analysis):
    assert set(html.CHECK_LABELS) == set(analysis.summary["checks"])
    assert set(tables.CHECK_FLAGS) < set(analysis.summary["checks"])  # refusals are events, not ledger flags
    ids = {a.get("id") for _, a in Tags(page).tags}
    links = re.findall(r'<a class="pill[^"]*" href="#([\w-]+)"', page)
    assert links and set(links) <= ids
    assert 'href="#anomalies" data-filter="BalanceMismatch"' in page
    assert re.search(r'<span class="n">1</span> Balance mismatches', page)


def test_tables_say_when_rows_are_left_out(analysis, monkeypatch):
    monkeypatch.setattr(html, "TABLE_ROWS", 1)
    page = html.render_dashboard(analysis)
    assert "Showing 1 of 2 rows. The full list is in report.xlsx (Overdrafts)." in page


def test_attempted_overdraft_is_marked(page):
    section = page[page.index('id="overdrafts"'):page.index('id="mismatches"')]
    assert section.count('<tr class="mark">') == 2  # the refused debit and the refusal without block
    assert tables.REFUSAL_WITHOUT_BLOCK in section


def test_data_quality_and_reconciliation_shown(page):
    quality = page[page.index('id="data-quality"'):]
    assert "7 transaction blocks seen = 7 transactions" in re.sub(r"\s+", " ", quality)
    assert "every block is accounted for" in quality


# -- report completeness ----------------------------------------------------------------------------

MISSING = [{"drop": "2024-01-11", "files": ["a/000000.gz", "b/000000.gz", "c/000000.gz"],
            "reason": "gzip stream broken <img src=x onerror=alert(1)>"}]
FAILURES = [{"run_id": "run-1", "job": "reports_job", "drop": "2024-01-11", "step": "parsed_logs",
             "error": "OSError: <script>window.__pwned=9</script>", "time": "2024-01-11T02:00:00Z"}]


def header_of(page: str) -> str:
    return page[page.index('<header class="top">'):page.index("</header>")]


def test_an_incomplete_report_says_so_in_its_header(analysis):
    made = replace(analysis, summary={**analysis.summary, "complete": False, "missing_drops": MISSING,
                                      "failures": FAILURES})
    page = html.render_dashboard(made)
    head = re.sub(r"\s+", " ", header_of(page))
    assert 'role="alert"' in head and "<strong>INCOMPLETE:</strong> this report leaves out 1 drop(s)" in head
    assert "<code>2024-01-11</code>: 3 file(s) left out. gzip stream broken &lt;img src=x" in head
    assert "Recent failed runs:" in head and "2024-01-11T02:00:00Z · reports_job · drop <code>2024-01-11</code> · " \
                                             "step parsed_logs: OSError: &lt;script&gt;window.__pwned=9" in head
    assert "<script>window.__pwned=9" not in page and "<img src=x onerror=alert(1)>" not in page


def test_a_complete_report_shows_no_banner_and_lists_failures_alone(analysis, page):
    head = header_of(page)
    assert "INCOMPLETE" not in head and "failed runs" not in head and 'role="alert"' not in page
    made = replace(analysis, summary={**analysis.summary, "complete": True, "missing_drops": [],
                                      "failures": FAILURES})
    head = header_of(html.render_dashboard(made))
    assert "INCOMPLETE" not in head and "Recent failed runs:" in head


# -- charts as plain JSON, the same as plotly.py would make ------------------------------------------

def test_the_kept_template_is_what_plotly_embeds_for_plotly_white():
    """If plotly is upgraded and this fails, rewrite calo_assets/templates/plotly_white.json from plotly:
    json.dumps(go.Figure(layout={"template": "plotly_white"}).to_plotly_json()["layout"]["template"],
    cls=PlotlyJSONEncoder, separators=(",", ":"))."""
    go = pytest.importorskip("plotly.graph_objects")
    from plotly.utils import PlotlyJSONEncoder

    made = go.Figure(layout={"template": "plotly_white"}).to_plotly_json()["layout"]["template"]
    assert json.dumps(html.plotly_white()) == json.dumps(json.loads(json.dumps(made, cls=PlotlyJSONEncoder)))


@pytest.mark.parametrize("rows", [1, 2, 3, 5, 8])
def test_stacked_panels_have_make_subplots_axes_to_the_bit(rows):
    subplots = pytest.importorskip("plotly.subplots")
    fig = subplots.make_subplots(rows=rows, cols=1, shared_xaxes=True, vertical_spacing=0.04)
    titles = [f"C{i}" for i in range(rows)]
    for i, title in enumerate(titles, 1):
        fig.update_yaxes(title_text=title, tickformat="~s", row=i, col=1)
    made = {k: v for k, v in fig.to_plotly_json()["layout"].items() if k != "template"}
    assert json.dumps(html._panels(titles)) == json.dumps(made)
