"""report.html in a real headless Chromium, offline: it draws, shows summary.json's figures, runs no log text."""

import json
from pathlib import Path

import pytest

from calo_assets.analysis import analyze_folder
from calo_assets.outputs import write_all
from calo_assets.reports.html import CHART_TITLES
from calo_assets.settings import Settings
from tests.logbuilder import report_drop

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="no system Chromium at /usr/bin/chromium")]


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    analysis = analyze_folder(report_drop(tmp_path_factory.mktemp("logs")).parents[1], Settings())
    return write_all(analysis, tmp_path_factory.mktemp("out"))


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM),
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def opened(browser, outputs):
    """The report opened once from file:// with no network; what the page said and asked for is recorded."""
    context = browser.new_context(offline=True, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    seen = {"errors": [], "requests": []}
    page.on("console", lambda m: m.type == "error" and seen["errors"].append(m.text))
    page.on("pageerror", lambda e: seen["errors"].append(str(e)))
    page.on("request", lambda r: seen["requests"].append(r.url))
    page.goto(outputs["report.html"].as_uri())
    page.wait_for_function(f"document.querySelectorAll('.js-plotly-plot .main-svg').length >= {len(CHART_TITLES)}")
    yield page, seen
    context.close()


def test_no_console_error_and_no_request_off_the_file(opened):
    page, seen = opened
    assert seen["errors"] == []
    assert [u for u in seen["requests"] if not u.startswith(("file:", "data:", "blob:"))] == []


def test_every_chart_has_drawn(opened):
    page, _ = opened
    for chart_id in CHART_TITLES:
        assert page.locator(f"#{chart_id}.js-plotly-plot .main-svg").count() >= 1, chart_id


def test_cards_show_the_figures_of_summary_json(opened, outputs):
    page, _ = opened
    summary = json.loads(outputs["summary.json"].read_text(encoding="utf-8"))
    for cur, figures in summary["currencies"].items():
        card = page.locator(f'article.card[data-currency="{cur}"]')
        for field in ("transactions", "users", "debit", "credit", "net"):
            shown = card.locator(f'dd[data-field="{field}"]').inner_text().replace(",", "")
            assert shown == str(figures[field]), (cur, field)


def test_injected_script_did_not_run_even_on_hover(opened):
    page, _ = opened
    page.evaluate("""() => {
        const gd = document.getElementById('chart-mismatches');
        Plotly.Fx.hover(gd, [{curveNumber: 0, pointNumber: 0}]);
    }""")
    page.wait_for_timeout(200)
    assert page.locator("#chart-mismatches .hoverlayer text").count() > 0
    assert "onerror" in page.locator("#chart-mismatches .hoverlayer").text_content()  # shown as text
    assert page.evaluate("window.__pwned") is None
    assert page.locator("table img, .hoverlayer img").count() == 0


def test_tables_filter_and_sort_in_the_page(opened):
    page, _ = opened
    rows = page.locator("#anomalies-table tbody tr")
    total = rows.count()
    page.fill('input[data-table="anomalies-table"]', "RefusedDebit")
    assert 0 < page.locator("#anomalies-table tbody tr:not([hidden])").count() < total
    page.click("a.pill[data-filter='BalanceMismatch']")
    visible = page.locator("#anomalies-table tbody tr:not([hidden])")
    assert visible.count() == 1 and "BalanceMismatch" in visible.inner_text()
    page.click("#by-source-table th:nth-child(5) button")  # amount, ascending
    amounts = [float(c.get_attribute("data-sort")) for c in page.locator("#by-source-table td:nth-child(5)").all()]
    assert amounts == sorted(amounts)
