"""Acceptance tests of the downloads app: the real app served by uvicorn (`python -m calo_assets.downloads serve`)
on a loopback port, over a real Dagster instance whose report versions were made by materializing the Dagster
assets (drops as the drop sensor submits them, then everything downstream up to `reports`).

The helpers (`Pipeline`, `Server`, `sign_in`, ...) are shared with test_downloads_browser.py.
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
import pytest
import requests
from openpyxl import load_workbook

import calo_assets.defs
from calo_assets.defs import assets as assets_module
from calo_assets.defs.resources import FailureWebhook, InboxFolder, ReportsFolder, StorageFolder, drop_key
from calo_assets.files import file_sha256
from calo_assets.downloads.auth import verify_password
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


def downloads_cli(*args: str, env: dict[str, str], stdin: str = "",
                  timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "calo_assets.downloads", *args], env=env, input=stdin,
                          capture_output=True, text=True, timeout=timeout)


def add_users(home: Path) -> None:
    for name, (role, password) in USERS.items():
        done = downloads_cli("add-user", name, "--role", role, "--password-stdin", env=server_env(home),
                             stdin=password + "\n")
        assert done.returncode == 0, done.stderr


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
                if requests.get(self.base + "/signin", timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
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


def sign_in(base: str, name: str, password: str, ip: str | None = None,
            next_url: str = "/") -> tuple[requests.Session, requests.Response]:
    """Fetch the form (CSRF token and cookie), post it; the session and the answer to the post."""
    session = requests.Session()
    if ip:
        session.headers["X-Forwarded-For"] = ip
    form = session.get(f"{base}/signin", timeout=10)
    token = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    answer = session.post(f"{base}/signin", data={"csrf": token, "username": name, "password": password,
                                                  "next": next_url}, allow_redirects=False, timeout=30)
    return session, answer


def signed_in(base: str, name: str) -> requests.Session:
    session, answer = sign_in(base, name, USERS[name][1])
    assert answer.status_code == 303, answer.text
    return session


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
def server(pipeline, tmp_path_factory):
    s = Server(server_env(pipeline.home), tmp_path_factory.mktemp("server") / "server.log")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def accountant(server) -> requests.Session:
    return signed_in(server.base, "alice")


@pytest.fixture(scope="module")
def auditor(server) -> requests.Session:
    return signed_in(server.base, "bob")


def test_the_versions_page_says_each_version_is_complete(server, pipeline, accountant):
    page = accountant.get(server.base + "/", timeout=10).text
    assert page.count('<span class="badge ok">complete</span>') == len(pipeline.versions)
    assert "incomplete" not in page and "failed run" not in page


# -- access control -------------------------------------------------------------------------------------------


def test_every_page_and_file_needs_signing_in(server, pipeline):
    first = pipeline.versions[0].storage_id
    paths = ["/", "/versions", f"/versions/{first}/report.xlsx", f"/versions/{first}/raw_parsed.csv",
             f"/versions/{first}/report.html", "/latest/report.xlsx", "/latest/raw_parsed.csv", "/versions/999/x",
             "/no-such-page"]
    forged = "alice|accountant|9999999999|" + "A" * 43
    for path in paths:
        for cookies in ({}, {"calo_session": forged}):
            answer = requests.get(server.base + path, cookies=cookies, allow_redirects=False, timeout=10)
            assert answer.status_code == 303, path
            assert answer.headers["Location"].startswith("/signin?next="), path
            assert answer.headers["Cache-Control"] == "no-store"


def test_signing_in_sets_a_strict_http_only_cookie_and_goes_back_where_asked(server):
    session, answer = sign_in(server.base, "alice", USERS["alice"][1], next_url="/latest/report.xlsx")
    assert answer.status_code == 303 and answer.headers["Location"] == "/latest/report.xlsx"
    cookie = answer.headers["Set-Cookie"]
    assert "calo_session=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert "Secure" not in cookie  # plain http on loopback
    assert session.get(server.base + "/", timeout=10).status_code == 200

    _, over_https = sign_in(server.base, "alice", USERS["alice"][1], next_url="//evil.example/")
    assert over_https.headers["Location"] == "/"  # never sent to another site
    session = requests.Session()
    session.headers["X-Forwarded-Proto"] = "https"  # as a TLS-terminating proxy on loopback says
    form = session.get(server.base + "/signin", timeout=10)
    token = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    assert "Secure" in form.headers["Set-Cookie"]  # the CSRF nonce cookie too
    answer = session.post(server.base + "/signin", data={"csrf": token, "username": "alice",
                                                         "password": USERS["alice"][1]},
                          cookies={"calo_csrf": form.cookies["calo_csrf"]},  # requests keeps Secure ones for https
                          allow_redirects=False, timeout=30)
    assert answer.status_code == 303 and "Secure" in answer.headers["Set-Cookie"]


def test_the_sign_in_form_needs_its_csrf_token(server):
    session = requests.Session()
    session.get(server.base + "/signin", timeout=10)
    data = {"username": "alice", "password": USERS["alice"][1]}
    assert session.post(server.base + "/signin", data=data, allow_redirects=False, timeout=10).status_code == 400
    other = requests.Session()
    token = re.search(r'name="csrf" value="([^"]+)"', other.get(server.base + "/signin", timeout=10).text).group(1)
    answer = session.post(server.base + "/signin", data={**data, "csrf": token}, allow_redirects=False, timeout=10)
    assert answer.status_code == 400  # a token made for another browser's nonce cookie
    assert "calo_session" not in answer.headers.get("Set-Cookie", "")


def test_wrong_passwords_are_refused_then_throttled_per_user_and_per_ip(server):
    statuses = [sign_in(server.base, "carol", "wrong-password!", ip="10.0.0.1")[1].status_code for _ in range(6)]
    assert statuses[:4] == [401] * 4 and statuses[4:] == [429, 429]
    _, locked = sign_in(server.base, "carol", USERS["carol"][1], ip="10.0.0.2")  # right password, other address
    assert locked.status_code == 429 and int(locked.headers["Retry-After"]) > 60
    assert "calo_session" not in locked.headers.get("Set-Cookie", "")

    for i in range(5):
        assert sign_in(server.base, f"nobody{i}", "guess-guess-guess", ip="10.0.0.3")[1].status_code in (401, 429)
    assert sign_in(server.base, "alice", USERS["alice"][1], ip="10.0.0.3")[1].status_code == 429
    assert sign_in(server.base, "alice", USERS["alice"][1], ip="10.0.0.4")[1].status_code == 303


def test_signing_out_ends_the_session(server):
    session = signed_in(server.base, "alice")
    page = session.get(server.base + "/", timeout=10).text
    token = re.search(r'action="/signout">.*?name="csrf" value="([^"]+)"', page, re.S).group(1)
    assert session.post(server.base + "/signout", data={"csrf": "x"}, allow_redirects=False,
                        timeout=10).status_code == 400
    answer = session.post(server.base + "/signout", data={"csrf": token}, allow_redirects=False, timeout=10)
    assert answer.status_code == 303
    assert session.get(server.base + "/", allow_redirects=False, timeout=10).status_code == 303


# -- versions and downloads -------------------------------------------------------------------------------------


def test_the_versions_page_lists_every_version_newest_first(server, pipeline, accountant):
    page = accountant.get(server.base + "/", timeout=10)
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


def test_the_accountant_downloads_the_exact_recorded_bytes(server, pipeline, accountant):
    for record in pipeline.versions:
        for name, f in recorded_files(record).items():
            if name not in DOWNLOADS:
                continue
            answer = accountant.get(f"{server.base}/versions/{record.storage_id}/{name}", timeout=30)
            assert answer.status_code == 200
            assert sha256(answer.content) == f["sha256"] == file_sha256(Path(f["path"]))
            assert answer.headers["Content-Disposition"].startswith("attachment")
    latest = accountant.get(server.base + "/latest/report.xlsx", timeout=30)
    assert sha256(latest.content) == recorded_files(pipeline.versions[-1])["report.xlsx"]["sha256"]


def test_the_auditor_gets_the_same_reports_with_user_ids_pseudonymised(server, pipeline, accountant, auditor):
    ledger_users = [{"user-aaa", "user-bbb"}, {"user-aaa", "user-bbb", "user-bbb-2", "@user-ats"}]
    raw_ids = ledger_users[1] | {"user-zzz"}
    pseudonyms_seen = []
    for record, users in zip(pipeline.versions[:2], ledger_users):
        base = f"{server.base}/versions/{record.storage_id}"
        original = accountant.get(f"{base}/report.xlsx", timeout=30).content
        _, ledger_ids = workbook_texts(original)
        assert set(ledger_ids) == users

        workbook = auditor.get(f"{base}/report.xlsx", timeout=60)
        assert workbook.status_code == 200 and "pseudonymised" in workbook.headers["Content-Disposition"]
        text, pseudonymised_ids = workbook_texts(workbook.content)
        assert pseudonymised_ids == [pseudonym(u) for u in ledger_ids]
        assert formula_cells(workbook.content) == formula_cells(original)  # '=HYPERLINK(…"u_…")' stays text
        csv_data = auditor.get(f"{base}/raw_parsed.csv", timeout=60).content
        original_csv = accountant.get(f"{base}/raw_parsed.csv", timeout=30).content
        csv_ids = [u.removeprefix("'") for u in csv_user_ids(original_csv)]
        assert csv_user_ids(csv_data) == [pseudonym(u) for u in csv_ids]  # "'@user-ats" is "@user-ats"
        html = auditor.get(f"{base}/report.html", timeout=60).content.decode()
        for content in (text, csv_data.decode(), html):
            assert not [u for u in raw_ids if u in content]
        assert pseudonym(ledger_ids[0]) in html
        pseudonyms_seen.append(dict(zip(ledger_ids, pseudonymised_ids)))
        again = auditor.get(f"{base}/report.xlsx", timeout=30)  # from the cache now
        assert again.content == workbook.content
    assert pseudonyms_seen[0]["user-aaa"] == pseudonyms_seen[1]["user-aaa"] == pseudonym("user-aaa")
    latest = auditor.get(server.base + "/latest/raw_parsed.csv", timeout=30).content.decode()
    assert pseudonym("user-aaa") in latest and "user-aaa" not in latest
    assert pseudonym("user-zzz") in text  # named only in the excerpt of a rejected block

    page = auditor.get(server.base + "/", timeout=10).text
    assert "Auditor view" in page and f"{DAGSTER_URL}/runs/" not in page
    cached = os.listdir(next((pipeline.home / "downloads-cache").iterdir()))
    assert {str(r.storage_id) for r in pipeline.versions[:2]} <= set(cached)


def test_traversal_unrecorded_names_and_unknown_versions_are_not_found(server, pipeline, accountant):
    version = pipeline.versions[0].storage_id
    ledger = pipeline.instance.fetch_materializations(dg.AssetKey("ledger"), limit=1).records[0].storage_id
    targets = [f"/versions/{version}/..%2f..%2fetc%2fpasswd", f"/versions/{version}/%2Fetc%2Fpasswd",
               f"/versions/{version}/../../../../etc/passwd", f"/versions/{version}/%2e%2e/%2e%2e/etc/passwd",
               f"/versions/{version}/summary.json", f"/versions/{version}/report.pdf",
               f"/versions/{version}/REPORT.XLSX", f"/versions/{ledger}/report.xlsx", "/versions/999999/report.xlsx",
               "/versions/99999999999999999999999/report.xlsx", "/versions/-1/report.xlsx",
               "/versions/abc/report.xlsx", "/latest/summary.json", "/latest/..%2f..%2fetc%2fpasswd",
               "/latest/%2Fetc%2Fpasswd", "/etc/passwd"]
    cookie = "; ".join(f"{c.name}={c.value}" for c in accountant.cookies)
    for target in targets:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("GET", target, headers={"Cookie": cookie})  # sent exactly as written, never normalised
        answer = conn.getresponse()
        body = answer.read()
        conn.close()
        assert answer.status == 404, target
        assert b"root:" not in body


def test_the_latest_links_follow_a_new_version(server, pipeline, accountant):
    before = pipeline.versions[-1]
    pipeline.drop("2024-01-12-[$LATEST]c/000000.gz", [tx(user="user-aaa", old="8.4", new="0.4")])
    third = pipeline.report()
    assert third.storage_id > before.storage_id
    for name in DOWNLOADS:
        answer = accountant.get(f"{server.base}/latest/{name}", timeout=30)
        assert sha256(answer.content) == recorded_files(third)[name]["sha256"]
    page = accountant.get(server.base + "/", timeout=10).text
    assert re.search(r'<article class="card" id="v(\d+)"', page).group(1) == str(third.storage_id)


def test_a_file_changed_or_gone_since_it_was_recorded_is_not_served(server, pipeline, accountant, auditor):
    pipeline.drop("2024-01-13-[$LATEST]d/000000.gz", [tx(user="user-ddd")])
    record = pipeline.report()
    files = recorded_files(record)
    base = f"{server.base}/versions/{record.storage_id}"
    assert accountant.get(f"{base}/raw_parsed.csv", timeout=30).status_code == 200  # digest now cached
    time.sleep(0.01)
    with open(files["raw_parsed.csv"]["path"], "r+b") as fh:
        fh.write(b"X")  # same size, new content
    changed = accountant.get(f"{base}/raw_parsed.csv", timeout=30)
    assert changed.status_code == 409 and "changed on disk" in changed.text
    assert auditor.get(f"{base}/report.html", timeout=30).status_code == 409  # ids come from the CSV too
    Path(files["report.xlsx"]["path"]).unlink()
    assert accountant.get(f"{base}/report.xlsx", timeout=30).status_code == 410
    assert accountant.get(f"{base}/report.html", timeout=30).status_code == 200


# -- start-up and users ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("overrides, message", [
    ({"CALO_DOWNLOADS_SECRET": None}, "CALO_DOWNLOADS_SECRET"),
    ({"CALO_DOWNLOADS_SECRET": "too-short"}, "at least 32"),
    ({"CALO_PSEUDONYM_KEY": None}, "CALO_PSEUDONYM_KEY"),
    ({"CALO_USERS_FILE": "/nonexistent/users.json"}, "does not exist"),
    ({"CALO_USERS_FILE": "EMPTY"}, "has no user"),
    ({"DAGSTER_HOME": None, "CALO_USERS_FILE": None}, "DAGSTER_HOME"),
])
def test_the_app_refuses_to_start_without_secret_users_or_pseudonym_key(pipeline, tmp_path, overrides, message):
    if overrides.get("CALO_USERS_FILE") == "EMPTY":
        (tmp_path / "users.json").write_text('{"users": {}}')
        overrides = {"CALO_USERS_FILE": str(tmp_path / "users.json")}
    done = downloads_cli("serve", "--port", str(free_port()), env=server_env(pipeline.home, **overrides), timeout=60)
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and message in done.stderr


def test_add_user_stores_only_a_salted_scrypt_hash(tmp_path):
    env = server_env(tmp_path, CALO_USERS_FILE=str(tmp_path / "users.json"))
    for name in ("dora", "erik"):
        assert downloads_cli("add-user", name, "--role", "auditor", "--password-stdin", env=env,
                             stdin="same-password-123\n").returncode == 0
    text = (tmp_path / "users.json").read_text()
    assert "same-password-123" not in text
    assert (tmp_path / "users.json").stat().st_mode & 0o077 == 0
    users = json.loads(text)["users"]
    stored = [users[n]["password"] for n in ("dora", "erik")]
    assert all(s["scheme"] == "scrypt" and (s["n"], s["r"], s["p"]) == (2**14, 8, 1) for s in stored)
    assert stored[0]["salt"] != stored[1]["salt"] and stored[0]["hash"] != stored[1]["hash"]
    assert verify_password("same-password-123", stored[0]) and not verify_password("same-password-124", stored[0])
    refused = downloads_cli("add-user", "fay", "--role", "auditor", "--password-stdin", env=env, stdin="short\n")
    assert refused.returncode == 2 and "at least 12" in refused.stderr


def test_an_incomplete_version_is_badged_with_its_missing_drops_and_failures(server, pipeline, accountant, auditor,
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
    for session, run_link in ((accountant, True), (auditor, False)):
        page = session.get(server.base + "/", timeout=10).text
        assert "The newest report is incomplete" in page
        newest = page.split(f'id="v{record.storage_id}"')[1].split("</article>")[0]
        assert '<span class="badge bad">incomplete</span>' in newest and "1 failed run(s)" in newest
        assert broken in newest and "2024-01-15-[$LATEST]f/000000.gz" in newest and "the parser raised" in newest
        assert (f'href="{DAGSTER_URL}/runs/{failure["run_id"]}"' in newest) == run_link
        older = page.split(f'id="v{pipeline.versions[-2].storage_id}"')[1]
        assert "incomplete" not in older.split("</article>")[0]

