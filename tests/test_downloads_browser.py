"""The downloads app in a real browser: headless Chromium (the system's, through Playwright) signs in,
reads the versions page at desktop and phone widths, and downloads a file.

Skipped when /usr/bin/chromium is absent (`make system-deps` installs it); Playwright's own browsers are
never downloaded. The screenshots go to the test's temporary folder, or to $CALO_SCREENSHOTS when set
(docs/downloads.png is the desktop one).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from logbuilder import tx
from test_downloads import USERS, Pipeline, Server, add_users, recorded_files, server_env

CHROMIUM = Path("/usr/bin/chromium")

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium (apt-get install chromium)")]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    pipeline = Pipeline(tmp_path_factory.mktemp("browser"))
    pipeline.drop("2024-01-10-[$LATEST]a/000000.gz", [tx(user="user-aaa"), tx(user="user-bbb", currency="SAR")])
    pipeline.report()
    pipeline.drop("2024-01-11-[$LATEST]b/000000.gz", [tx(user="user-aaa", old="16.4", new="8.4"),
                                                     tx(user="user-ccc", currency="KWD", amount="1.250",
                                                        old="10", new="8.75")])
    pipeline.report()
    add_users(pipeline.home)
    server = Server(server_env(pipeline.home), tmp_path_factory.mktemp("browser-server") / "server.log")
    yield pipeline, server
    server.stop()


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                              args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield chromium
        chromium.close()


def test_sign_in_list_versions_and_download(site, browser, tmp_path):
    pipeline, server = site
    shots = Path(os.environ.get("CALO_SCREENSHOTS") or tmp_path)
    newest = pipeline.versions[-1]
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    try:
        page.goto(server.base + "/")
        assert page.url.startswith(server.base + "/signin")
        page.fill("#username", "alice")
        page.fill("#password", "not-her-password")
        page.click("button[type=submit]")
        assert page.locator("[role=alert]").inner_text() == "Wrong user name or password."
        page.screenshot(path=str(shots / "downloads-signin.png"))
        assert page.input_value("#username") == "alice"
        page.fill("#password", USERS["alice"][1])
        page.click("button[type=submit]")
        page.wait_for_url(server.base + "/")
        assert page.locator("article.card").count() == len(pipeline.versions)
        assert page.locator("article.card").first.get_attribute("id") == f"v{newest.storage_id}"
        assert page.locator(f"#v{newest.storage_id} .tag").inner_text() == "latest"
        page.screenshot(path=str(shots / "downloads-desktop.png"), full_page=True)

        with page.expect_download() as info:
            page.click(f"a[href='/versions/{newest.storage_id}/report.xlsx']")
        download = info.value
        saved = tmp_path / download.suggested_filename
        download.save_as(saved)
        assert saved.name.endswith("-report.xlsx")
        assert hashlib.sha256(saved.read_bytes()).hexdigest() == recorded_files(newest)["report.xlsx"]["sha256"]

        page.set_viewport_size({"width": 390, "height": 844})
        page.reload()
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, "the page scrolls sideways on a phone"
        page.screenshot(path=str(shots / "downloads-phone.png"), full_page=True)
    finally:
        context.close()
