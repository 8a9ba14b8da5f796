"""Acceptance tests of the downloads app over a real Dagster instance whose report versions were made by
materializing the Dagster assets (drops as the drop sensor submits them, then everything downstream up to
`reports`).

The app is the one `create_app` makes, driven in this process by Starlette's TestClient (a browser per
client: its own cookies, its own address); the command line is called in this process too. One test runs it
end to end: `python -m calo_assets.downloads serve` under uvicorn on a loopback port, behind the proxy headers
a TLS-terminating proxy sends, with paths sent on the wire exactly as written.

The helpers (`Pipeline`, `Server`, `sign_in`, ...) are shared with test_downloads_browser.py and
test_downloads_load.py.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import http.client
import io
import json
import os
import re
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import dagster as dg
import httpx2
import pytest
import uvicorn
from openpyxl import load_workbook
from starlette.testclient import TestClient

import calo_assets.defs
from calo_assets.defs import assets as assets_module
from calo_assets.defs.resources import FailureWebhook, InboxFolder, ReportsFolder, StorageFolder, drop_key
from calo_assets.downloads.__main__ import main as downloads_main
from calo_assets.downloads.app import DownloadSettings, create_app, users_file
from calo_assets.downloads.auth import Users, verify_password
from calo_assets.files import file_sha256
from logbuilder import simple_log, tx

pytestmark = pytest.mark.slow

SECRET = "test-session-secret-0123456789-abcdefghij"
PSEUDONYM_KEY = "test-pseudonym-key-0123456789-abcdefghij"
DAGSTER_URL = "http://dagster.example:3000"
USERS = {"alice": ("accountant", "alice-password-1"), "bob": ("auditor", "bob-password-12"),
         "carol": ("accountant", "carol-password-1")}
DOWNLOADS = ("report.xlsx", "report.html", "raw_parsed.csv")
DOWNSTREAM = ["parsed_events", "sync_errors", "ledger", "anomalies", "reports"]


def pseudonym(user_id: str) -> str:
    return "u_" + hmac.new(PSEUDONYM_KEY.encode(), user_id.encode(), hashlib.sha256).hexdigest()[:16]


def unreadable_block(user: str) -> dict:
    """A transaction block without its amount: rejected, so its user is named only in the excerpt."""
    fields = tx(user=user)
    del fields["amount"]
    return fields


class Pipeline:
    """The Dagster layer over temporary folders, driven the way the service drives it."""

    def __init__(self, root: Path):
        self.home = root / "dagster_home"
        self.home.mkdir(parents=True)
        (self.home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        self.inbox = root / "inbox"
        self.versions: list[dg.EventLogRecord] = []  # the `reports` records made, oldest first
        self.instance = dg.DagsterInstance.from_config(str(self.home))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", dg.PreviewWarning)
            self.defs = dg.load_definitions_from_package_module(calo_assets.defs, resources={
                "inbox": InboxFolder(path=str(self.inbox), settle_seconds=0),
                "storage": StorageFolder(path=str(root / "storage")),
                "reports_folder": ReportsFolder(path=str(root / "reports")),
                "failure_webhook": FailureWebhook()})

    def drop(self, name: str, transactions: list[dict], parses: bool = True) -> str:
        """One drop of one log file, registered and run as the drop sensor would (`parses`: whether it succeeds)."""
        path = simple_log(self.inbox, transactions, name=name)
        rel = path.relative_to(self.inbox).as_posix()
        files = [{"path": rel, "size": path.stat().st_size, "sha256": file_sha256(path), "skip": ""}]
        key = drop_key([(rel, files[0]["sha256"])])
        self.instance.add_dynamic_partitions("drops", [key])
        self._materialize(["raw_log_drops", "parsed_drop"], partition_key=key,
                          run_config={"ops": {"raw_log_drops": {"config": {"files": files}}}}, succeeds=parses)
        return key

    def report(self) -> dg.EventLogRecord:
        """Rebuild everything downstream of the drops (with the checks); the new `reports` record."""
        self._materialize(DOWNSTREAM)
        self.versions.append(self.instance.fetch_materializations(dg.AssetKey("reports"), limit=1).records[0])
        return self.versions[-1]

    def _materialize(self, selection: list[str], succeeds: bool = True, **kwargs) -> None:
        result = dg.materialize([*self.defs.assets, *self.defs.asset_checks], selection=selection,
                                instance=self.instance, resources=self.defs.resources, raise_on_error=False, **kwargs)
        assert result.success == succeeds


def recorded_files(record: dg.EventLogRecord) -> dict[str, dict]:
    return record.asset_materialization.metadata["files"].value


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(home: Path, **overrides: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALO_")}
    env.update(DAGSTER_HOME=str(home), CALO_DOWNLOADS_SECRET=SECRET, CALO_PSEUDONYM_KEY=PSEUDONYM_KEY,
               CALO_DAGSTER_URL=DAGSTER_URL, FORWARDED_ALLOW_IPS="127.0.0.1")
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def add_users(home: Path) -> None:
    """USERS in the users file the app reads (the `add-user` command has a test of its own)."""
    path = users_file(server_env(home))
    users = Users.load(path, missing_ok=True)
    for name, (role, password) in USERS.items():
        users.set(name, role, password)
    users.save(path)


def in_environment(monkeypatch, env: dict[str, str]) -> None:
    """Make `env` this process's whole environment, for the command line called in process."""
    for key in list(os.environ):
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)


class Server:
    """`python -m calo_assets.downloads serve` on a free loopback port; always stopped by `stop`."""

    def __init__(self, env: dict[str, str], log: Path):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "calo_assets.downloads", "serve", "--host", "127.0.0.1",
                 "--port", str(self.port)], env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the server exited: {log.read_text()}")
            try:
                if httpx2.get(self.base + "/signin", timeout=2).status_code == 200:
                    return
            except httpx2.TransportError:
                time.sleep(0.2)
        self.stop()
        raise AssertionError(f"the server did not answer within 60 s: {log.read_text()}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def csrf_token(page: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


def sign_in(browser: httpx2.Client, name: str, password: str, next_url: str = "/") -> httpx2.Response:
    """Fetch the form (CSRF token and cookie) and post it; the answer to the post (the browser keeps the cookies).

    `browser` is any httpx2 client: a TestClient on the app, or an httpx2.Client on a real server.
    """
    form = browser.get("/signin")
    return browser.post("/signin", data={"csrf": csrf_token(form.text), "username": name, "password": password,
                                         "next": next_url}, follow_redirects=False)


def signed_in(browser: httpx2.Client, name: str) -> httpx2.Client:
    answer = sign_in(browser, name, USERS[name][1])
    assert answer.status_code == 303, answer.text
    return browser


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def workbook_texts(data: bytes) -> tuple[str, list[str]]:
    """All text of a workbook (every sheet, every cell) and the Ledger sheet's userId column."""
    wb = load_workbook(io.BytesIO(data), read_only=True)
    texts = [str(v) for ws in wb.worksheets for row in ws.iter_rows(values_only=True) for v in row if v is not None]
    rows = wb["Ledger"].iter_rows(values_only=True)
    column = next(rows).index("userId")
    return "\n".join(texts), [row[column] for row in rows]


def formula_cells(data: bytes) -> list[str]:
    wb = load_workbook(io.BytesIO(data))
    return [f"{ws.title}!{c.coordinate}" for ws in wb.worksheets for row in ws.iter_rows() for c in row
            if c.data_type == "f"]


def csv_user_ids(data: bytes) -> list[str]:
    return [row["userId"] for row in csv.DictReader(io.StringIO(data.decode("utf-8")))]


# -- the instance and the server ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Pipeline:
    """Two report versions: one drop, then a second drop (a user whose id extends another's, one whose id
    a spreadsheet would run as a formula, log text that looks like a formula and names a user, and a
    rejected block naming a user no column has)."""
    p = Pipeline(tmp_path_factory.mktemp("downloads"))
    p.drop("2024-01-10-[$LATEST]a/000000.gz", [tx(user="user-aaa"), tx(user="user-bbb", currency="SAR")])
    p.report()
    p.drop("2024-01-11-[$LATEST]b/000000.gz", [tx(user="user-aaa", old="16.4", new="8.4"), tx(user="user-bbb-2"),
                                              tx(user="@user-ats", action='=HYPERLINK("http://x.example","user-aaa")'),
                                              unreadable_block("user-zzz")])
    p.report()
    add_users(p.home)
    return p


@pytest.fixture(scope="module")
def connect(pipeline):
    """A new browser on the app, in this process: `connect(ip=..., https=...)` is a TestClient of its own
    (cookies, client address, scheme) on the one app `create_app` made from the service's environment."""
    app = create_app(DownloadSettings.from_env(server_env(pipeline.home)))
    browsers: list[TestClient] = []

    def connect(ip: str = "127.0.0.1", https: bool = False) -> TestClient:
        browsers.append(TestClient(app, base_url=f"{'https' if https else 'http'}://testserver", client=(ip, 50000),
                                   follow_redirects=False))
        return browsers[-1]

    with TestClient(app):  # the app's lifespan: its instance is disposed at the end
        yield connect
    for browser in browsers:
        browser.close()


@pytest.fixture(scope="module")
def accountant(connect) -> TestClient:
    return signed_in(connect(), "alice")


@pytest.fixture(scope="module")
def auditor(connect) -> TestClient:
    return signed_in(connect(), "bob")


def test_the_versions_page_says_each_version_is_complete(pipeline, accountant):
    page = accountant.get("/").text
    assert page.count('<span class="badge ok">complete</span>') == len(pipeline.versions)
    assert "incomplete" not in page and "failed run" not in page


# -- access control -------------------------------------------------------------------------------------------


def test_every_page_and_file_needs_signing_in(connect, pipeline):
    first = pipeline.versions[0].storage_id
    paths = ["/", "/versions", f"/versions/{first}/report.xlsx", f"/versions/{first}/raw_parsed.csv",
             f"/versions/{first}/report.html", "/latest/report.xlsx", "/latest/raw_parsed.csv", "/versions/999/x",
             "/no-such-page"]
    forged = "alice|accountant|9999999999|" + "A" * 43
    for path in paths:
        for cookie in ("", f"calo_session={forged}"):
            answer = connect().get(path, headers={"Cookie": cookie} if cookie else {})
            assert answer.status_code == 303, path
            assert answer.headers["Location"].startswith("/signin?next="), path
            assert answer.headers["Cache-Control"] == "no-store"


def test_signing_in_sets_a_strict_http_only_cookie_and_goes_back_where_asked(connect):
    browser = connect()
    answer = sign_in(browser, "alice", USERS["alice"][1], next_url="/latest/report.xlsx")
    assert answer.status_code == 303 and answer.headers["Location"] == "/latest/report.xlsx"
    cookie = answer.headers["Set-Cookie"]
    assert "calo_session=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert "Secure" not in cookie  # plain http
    assert browser.get("/").status_code == 200

    elsewhere = sign_in(connect(), "alice", USERS["alice"][1], next_url="//evil.example/")
    assert elsewhere.headers["Location"] == "/"  # never sent to another site
    browser = connect(https=True)
    form = browser.get("/signin")
    assert "Secure" in form.headers["Set-Cookie"]  # the CSRF nonce cookie too
    answer = sign_in(browser, "alice", USERS["alice"][1])
    assert answer.status_code == 303 and "Secure" in answer.headers["Set-Cookie"]


def test_the_sign_in_form_needs_its_csrf_token(connect):
    browser = connect()
    browser.get("/signin")
    data = {"username": "alice", "password": USERS["alice"][1]}
    assert browser.post("/signin", data=data).status_code == 400
    token = csrf_token(connect().get("/signin").text)
    answer = browser.post("/signin", data={**data, "csrf": token})
    assert answer.status_code == 400  # a token made for another browser's nonce cookie
    assert "calo_session" not in answer.headers.get("Set-Cookie", "")


def test_wrong_passwords_are_refused_then_throttled_per_user_and_per_ip(connect):
    statuses = [sign_in(connect("10.0.0.1"), "carol", "wrong-password!").status_code for _ in range(6)]
    assert statuses[:4] == [401] * 4 and statuses[4:] == [429, 429]
    locked = sign_in(connect("10.0.0.2"), "carol", USERS["carol"][1])  # right password, other address
    assert locked.status_code == 429 and int(locked.headers["Retry-After"]) > 60
    assert "calo_session" not in locked.headers.get("Set-Cookie", "")

    for i in range(5):
        assert sign_in(connect("10.0.0.3"), f"nobody{i}", "guess-guess-guess").status_code in (401, 429)
    assert sign_in(connect("10.0.0.3"), "alice", USERS["alice"][1]).status_code == 429
    assert sign_in(connect("10.0.0.4"), "alice", USERS["alice"][1]).status_code == 303


def test_signing_out_ends_the_session(connect):
    browser = signed_in(connect(), "alice")
    page = browser.get("/").text
    token = re.search(r'action="/signout">.*?name="csrf" value="([^"]+)"', page, re.S).group(1)
    assert browser.post("/signout", data={"csrf": "x"}).status_code == 400
    answer = browser.post("/signout", data={"csrf": token})
    assert answer.status_code == 303
    assert browser.get("/").status_code == 303


# -- versions and downloads -------------------------------------------------------------------------------------


def test_the_versions_page_lists_every_version_newest_first(pipeline, accountant):
    page = accountant.get("/")
    assert page.status_code == 200 and 'name="viewport"' in page.text and "<script" not in page.text
    ids = [int(i) for i in re.findall(r'<article class="card" id="v(\d+)"', page.text)]
    assert ids == sorted((r.storage_id for r in pipeline.versions), reverse=True)
    for record in pipeline.versions:
        assert f'href="{DAGSTER_URL}/runs/{record.run_id}"' in page.text
        meta = record.asset_materialization.metadata
        for key in meta["drops"].value:
            assert key in page.text
        for name in DOWNLOADS:
            assert f'href="/versions/{record.storage_id}/{name}"' in page.text
        for currency, totals in meta["currency_totals"].value.items():
            row = re.search(rf"<tr><td>{currency}</td>(.*?)</tr>", page.text.split(f'id="v{record.storage_id}"')[1])
            cells = dict(re.findall(r'<td data-label="(\w+)">([^<]*)</td>', row.group(1)))
            assert cells == {c: str(totals[c]) for c in ("transactions", "users", "debit", "credit", "net")}
    assert "checks passed" in page.text
    assert "summary.json" not in page.text
    assert re.search(r"\btotal\b", page.text.lower()) is None  # per currency only, never added across currencies
    for name in DOWNLOADS:
        assert f'href="/latest/{name}"' in page.text


def test_the_accountant_downloads_the_exact_recorded_bytes(pipeline, accountant):
    for record in pipeline.versions:
        for name, f in recorded_files(record).items():
            if name not in DOWNLOADS:
                continue
            answer = accountant.get(f"/versions/{record.storage_id}/{name}")
            assert answer.status_code == 200
            assert sha256(answer.content) == f["sha256"] == file_sha256(Path(f["path"]))
            assert answer.headers["Content-Disposition"].startswith("attachment")
    latest = accountant.get("/latest/report.xlsx")
    assert sha256(latest.content) == recorded_files(pipeline.versions[-1])["report.xlsx"]["sha256"]


def test_the_auditor_gets_the_same_reports_with_user_ids_pseudonymised(pipeline, accountant, auditor):
    ledger_users = [{"user-aaa", "user-bbb"}, {"user-aaa", "user-bbb", "user-bbb-2", "@user-ats"}]
    raw_ids = ledger_users[1] | {"user-zzz"}
    pseudonyms_seen = []
    for record, users in zip(pipeline.versions[:2], ledger_users):
        base = f"/versions/{record.storage_id}"
        original = accountant.get(f"{base}/report.xlsx").content
        _, ledger_ids = workbook_texts(original)
        assert set(ledger_ids) == users

        workbook = auditor.get(f"{base}/report.xlsx")
        assert workbook.status_code == 200 and "pseudonymised" in workbook.headers["Content-Disposition"]
        text, pseudonymised_ids = workbook_texts(workbook.content)
        assert pseudonymised_ids == [pseudonym(u) for u in ledger_ids]
        assert formula_cells(workbook.content) == formula_cells(original)  # '=HYPERLINK(…"u_…")' stays text
        csv_data = auditor.get(f"{base}/raw_parsed.csv").content
        original_csv = accountant.get(f"{base}/raw_parsed.csv").content
        csv_ids = [u.removeprefix("'") for u in csv_user_ids(original_csv)]
        assert csv_user_ids(csv_data) == [pseudonym(u) for u in csv_ids]  # "'@user-ats" is "@user-ats"
        html = auditor.get(f"{base}/report.html").content.decode()
        for content in (text, csv_data.decode(), html):
            assert not [u for u in raw_ids if u in content]
        assert pseudonym(ledger_ids[0]) in html
        pseudonyms_seen.append(dict(zip(ledger_ids, pseudonymised_ids)))
        again = auditor.get(f"{base}/report.xlsx")  # from the cache now
        assert again.content == workbook.content
    assert pseudonyms_seen[0]["user-aaa"] == pseudonyms_seen[1]["user-aaa"] == pseudonym("user-aaa")
    latest = auditor.get("/latest/raw_parsed.csv").content.decode()
    assert pseudonym("user-aaa") in latest and "user-aaa" not in latest
    assert pseudonym("user-zzz") in text  # named only in the excerpt of a rejected block

    page = auditor.get("/").text
    assert "Auditor view" in page and f"{DAGSTER_URL}/runs/" not in page
    cached = os.listdir(next((pipeline.home / "downloads-cache").iterdir()))
    assert {str(r.storage_id) for r in pipeline.versions[:2]} <= set(cached)


def test_unrecorded_names_and_unknown_versions_are_not_found(pipeline, accountant):
    """(Paths with dot segments are sent on the wire as written in the end-to-end test.)"""
    version = pipeline.versions[0].storage_id
    ledger = pipeline.instance.fetch_materializations(dg.AssetKey("ledger"), limit=1).records[0].storage_id
    targets = [f"/versions/{version}/summary.json", f"/versions/{version}/report.pdf",
               f"/versions/{version}/REPORT.XLSX", f"/versions/{ledger}/report.xlsx", "/versions/999999/report.xlsx",
               "/versions/99999999999999999999999/report.xlsx", "/versions/-1/report.xlsx",
               "/versions/abc/report.xlsx", "/latest/summary.json", "/etc/passwd"]
    for target in targets:
        answer = accountant.get(target)
        assert answer.status_code == 404, target
        assert b"root:" not in answer.content


def test_the_latest_links_follow_a_new_version(pipeline, accountant):
    before = pipeline.versions[-1]
    pipeline.drop("2024-01-12-[$LATEST]c/000000.gz", [tx(user="user-aaa", old="8.4", new="0.4")])
    third = pipeline.report()
    assert third.storage_id > before.storage_id
    for name in DOWNLOADS:
        answer = accountant.get(f"/latest/{name}")
        assert sha256(answer.content) == recorded_files(third)[name]["sha256"]
    page = accountant.get("/").text
    assert re.search(r'<article class="card" id="v(\d+)"', page).group(1) == str(third.storage_id)


def test_a_file_changed_or_gone_since_it_was_recorded_is_not_served(pipeline, accountant, auditor):
    pipeline.drop("2024-01-13-[$LATEST]d/000000.gz", [tx(user="user-ddd")])
    record = pipeline.report()
    files = recorded_files(record)
    base = f"/versions/{record.storage_id}"
    assert accountant.get(f"{base}/raw_parsed.csv").status_code == 200  # digest now cached
    csv_path = files["raw_parsed.csv"]["path"]
    before = os.stat(csv_path).st_mtime_ns
    with open(csv_path, "r+b") as fh:
        fh.write(b"X")  # same size, new content
    os.utime(csv_path, ns=(before + 1_000_000_000, before + 1_000_000_000))  # whatever the clock's granularity
    changed = accountant.get(f"{base}/raw_parsed.csv")
    assert changed.status_code == 409 and "changed on disk" in changed.text
    assert auditor.get(f"{base}/report.html").status_code == 409  # ids come from the CSV too
    Path(files["report.xlsx"]["path"]).unlink()
    assert accountant.get(f"{base}/report.xlsx").status_code == 410
    assert accountant.get(f"{base}/report.html").status_code == 200


# -- start-up and users ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("overrides, message", [
    ({"CALO_DOWNLOADS_SECRET": None}, "CALO_DOWNLOADS_SECRET"),
    ({"CALO_DOWNLOADS_SECRET": "too-short"}, "at least 32"),
    ({"CALO_PSEUDONYM_KEY": None}, "CALO_PSEUDONYM_KEY"),
    ({"CALO_USERS_FILE": "/nonexistent/users.json"}, "does not exist"),
    ({"CALO_USERS_FILE": "EMPTY"}, "has no user"),
    ({"DAGSTER_HOME": None, "CALO_USERS_FILE": None}, "DAGSTER_HOME"),
])
def test_the_app_refuses_to_start_without_secret_users_or_pseudonym_key(pipeline, tmp_path, monkeypatch, capsys,
                                                                          overrides, message):
    if overrides.get("CALO_USERS_FILE") == "EMPTY":
        (tmp_path / "users.json").write_text('{"users": {}}')
        overrides = {"CALO_USERS_FILE": str(tmp_path / "users.json")}
    in_environment(monkeypatch, server_env(pipeline.home, **overrides))
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: pytest.fail("the app started"))
    assert downloads_main(["serve", "--port", str(free_port())]) == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith("error: ") and message in stderr


def test_add_user_stores_only_a_salted_scrypt_hash(tmp_path, monkeypatch, capsys):
    in_environment(monkeypatch, server_env(tmp_path, CALO_USERS_FILE=str(tmp_path / "users.json")))

    def add_user(name: str, password: str) -> int:
        monkeypatch.setattr(sys, "stdin", io.StringIO(password + "\n"))
        return downloads_main(["add-user", name, "--role", "auditor", "--password-stdin"])

    for name in ("dora", "erik"):
        assert add_user(name, "same-password-123") == 0
    text = (tmp_path / "users.json").read_text()
    assert "same-password-123" not in text
    assert (tmp_path / "users.json").stat().st_mode & 0o077 == 0
    users = json.loads(text)["users"]
    stored = [users[n]["password"] for n in ("dora", "erik")]
    assert all(s["scheme"] == "scrypt" and (s["n"], s["r"], s["p"]) == (2**14, 8, 1) for s in stored)
    assert stored[0]["salt"] != stored[1]["salt"] and stored[0]["hash"] != stored[1]["hash"]
    assert verify_password("same-password-123", stored[0]) and not verify_password("same-password-124", stored[0])
    capsys.readouterr()
    assert add_user("fay", "short") == 2 and "at least 12" in capsys.readouterr().err


def test_an_incomplete_version_is_badged_with_its_missing_drops_and_failures(pipeline, accountant, auditor,
                                                                               monkeypatch):
    def raising(*args, **kwargs):
        raise dg.Failure("the parser raised", allow_retries=False)

    monkeypatch.setattr(assets_module, "read_logs", raising)
    broken = pipeline.drop("2024-01-15-[$LATEST]f/000000.gz", [tx(user="user-fff")], parses=False)
    monkeypatch.undo()
    record = pipeline.report()
    meta = record.asset_materialization.metadata
    assert meta["complete"].value is False and meta["missing_drops"].value[0]["drop"] == broken
    (failure,) = meta["failures"].value
    for browser, run_link in ((accountant, True), (auditor, False)):
        page = browser.get("/").text
        assert "The newest report is incomplete" in page
        newest = page.split(f'id="v{record.storage_id}"')[1].split("</article>")[0]
        assert '<span class="badge bad">incomplete</span>' in newest and "1 failed run(s)" in newest
        assert broken in newest and "2024-01-15-[$LATEST]f/000000.gz" in newest and "the parser raised" in newest
        assert (f'href="{DAGSTER_URL}/runs/{failure["run_id"]}"' in newest) == run_link
        older = page.split(f'id="v{pipeline.versions[-2].storage_id}"')[1]
        assert "incomplete" not in older.split("</article>")[0]


# -- end to end -------------------------------------------------------------------------------------------------


def test_the_served_app_behind_a_tls_proxy_end_to_end(pipeline, tmp_path):
    """`python -m calo_assets.downloads serve` under uvicorn, as deployed behind a TLS-terminating proxy on
    loopback: the forwarded scheme makes the cookies Secure, the forwarded address is the one throttling counts,
    a recorded workbook comes down byte for byte, and paths sent exactly as written (never normalised) find
    nothing."""
    server = Server(server_env(pipeline.home), tmp_path / "server.log")
    try:
        with httpx2.Client(base_url=server.base, headers={"X-Forwarded-Proto": "https"}, timeout=30) as browser:
            form = browser.get("/signin")
            assert "Secure" in form.headers["Set-Cookie"]  # the CSRF nonce cookie
            # an http client keeps Secure cookies for https only: send the nonce as the proxy would pass it on
            answer = browser.post("/signin", data={"csrf": csrf_token(form.text), "username": "alice",
                                                   "password": USERS["alice"][1]},
                                  headers={"Cookie": f"calo_csrf={form.cookies['calo_csrf']}"})
            assert answer.status_code == 303 and "Secure" in answer.headers["Set-Cookie"]

        def from_address(ip: str) -> httpx2.Client:
            return httpx2.Client(base_url=server.base, headers={"X-Forwarded-For": ip}, timeout=30)

        for i in range(5):
            with from_address("10.0.0.3") as browser:
                assert sign_in(browser, f"nobody{i}", "guess-guess-guess").status_code in (401, 429)
        with from_address("10.0.0.3") as browser:
            assert sign_in(browser, "alice", USERS["alice"][1]).status_code == 429
        with from_address("10.0.0.4") as accountant:
            signed_in(accountant, "alice")
            first = pipeline.versions[0]
            workbook = accountant.get(f"/versions/{first.storage_id}/report.xlsx")
            assert workbook.status_code == 200
            assert sha256(workbook.content) == recorded_files(first)["report.xlsx"]["sha256"]
            cookie = "; ".join(f"{name}={value}" for name, value in accountant.cookies.items())

        targets = [f"/versions/{first.storage_id}/{path}" for path in
                   ("..%2f..%2fetc%2fpasswd", "%2Fetc%2Fpasswd", "../../../../etc/passwd", "%2e%2e/%2e%2e/etc/passwd")]
        targets += ["/latest/..%2f..%2fetc%2fpasswd", "/latest/%2Fetc%2Fpasswd", "/etc/passwd"]
        for target in targets:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            conn.request("GET", target, headers={"Cookie": cookie})  # sent exactly as written, never normalised
            answer = conn.getresponse()
            body = answer.read()
            conn.close()
            assert answer.status == 404, target
            assert b"root:" not in body
    finally:
        server.stop()
