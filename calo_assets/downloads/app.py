"""The downloads web app: sign in, list report versions, download their files (pseudonymised for auditors).

Read-only: it reads `reports` materializations from the Dagster instance and
streams the files they recorded. A file is found through its version's
metadata only (`/versions/<storage id>/<recorded name>`), never through a path
taken from the request, and is served only while its sha256 is still the one
recorded. Everything but the sign-in form needs a session.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, quote

import dagster as dg
from jinja2 import Environment, FileSystemLoader
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from calo_assets.downloads.auth import Csrf, Sessions, Signer, Throttle, User, Users, UsersFileError
from calo_assets.downloads.pseudonymise import Pseudonymiser
from calo_assets.files import file_sha256
from calo_assets.downloads.versions import ReportFile, Version, get_version, latest_version, list_versions

TEMPLATES = Path(__file__).resolve().parents[1] / "templates" / "downloads"
SESSION_COOKIE, CSRF_COOKIE = "calo_session", "calo_csrf"
MIN_SECRET = 32
FORM_LIMIT = 4096  # bytes: a sign-in form is tiny; anything bigger is refused unread
TOTAL_COLUMNS = ("transactions", "users", "debit", "credit", "net")
MEDIA_TYPES = {".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
               ".html": "text/html; charset=utf-8", ".csv": "text/csv; charset=utf-8"}
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}
SAFE_NEXT = re.compile(r"/(?![/\\])[\x21-\x7e]*")


class ConfigError(Exception):
    """The app cannot start as configured; the message says what to set."""


def users_file(env: Mapping[str, str]) -> Path:
    if env.get("CALO_USERS_FILE"):
        return Path(env["CALO_USERS_FILE"]).expanduser()
    if not env.get("DAGSTER_HOME"):
        raise ConfigError("set CALO_USERS_FILE, or DAGSTER_HOME (the users file is then "
                          "$DAGSTER_HOME/downloads-users.json)")
    return Path(env["DAGSTER_HOME"]).expanduser() / "downloads-users.json"


@dataclass(frozen=True)
class DownloadSettings:
    dagster_home: Path
    secret: str
    users_file: Path
    cache_dir: Path
    pseudonym_key: str = ""
    dagster_url: str = "http://127.0.0.1:3000"
    secure_cookies: bool = False  # always mark cookies Secure (they are anyway on a request seen as https)
    session_hours: float = 8
    versions_shown: int = 100

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> DownloadSettings:
        if not env.get("DAGSTER_HOME"):
            raise ConfigError("DAGSTER_HOME is not set: it must name the Dagster instance folder "
                              "that records the reports")
        home = Path(env["DAGSTER_HOME"]).expanduser()
        return cls(
            dagster_home=home,
            secret=env.get("CALO_DOWNLOADS_SECRET", ""),
            users_file=users_file(env),
            cache_dir=Path(env.get("CALO_DOWNLOADS_CACHE") or home / "downloads-cache").expanduser(),
            pseudonym_key=env.get("CALO_PSEUDONYM_KEY", ""),
            dagster_url=env.get("CALO_DAGSTER_URL") or cls.dagster_url,
            secure_cookies=env.get("CALO_SECURE_COOKIES", "").lower() in ("1", "true", "yes"),
        )


def load_users(settings: DownloadSettings) -> Users:
    """The users, once every start-up rule holds; raises ConfigError naming what is missing."""
    if len(settings.secret) < MIN_SECRET:
        raise ConfigError(f"CALO_DOWNLOADS_SECRET must be set to a random text of at least {MIN_SECRET} "
                          "characters (it signs the session cookies), e.g. from: "
                          "python -c 'import secrets; print(secrets.token_urlsafe(48))'")
    if not settings.dagster_home.is_dir():
        raise ConfigError(f"DAGSTER_HOME {settings.dagster_home} is not a folder")
    try:
        users = Users.load(settings.users_file)
    except UsersFileError as exc:
        raise ConfigError(f"{exc}; add a user with: python -m calo_assets.downloads add-user NAME "
                          "--role accountant") from None
    if not users.entries:
        raise ConfigError(f"users file {settings.users_file} has no user; add one with: "
                          "python -m calo_assets.downloads add-user NAME --role accountant")
    if "auditor" in users.roles() and len(settings.pseudonym_key) < MIN_SECRET:
        raise ConfigError(f"an auditor is defined but CALO_PSEUDONYM_KEY is not set (at least {MIN_SECRET} "
                          "characters): auditors may only see pseudonymised user ids")
    return users


class Integrity:
    """Whether a recorded file is still on disk with its recorded sha256.

    The digest is recomputed only when the file's (path, mtime, size) changes,
    so checking on every download costs one stat.
    """

    def __init__(self):
        self._digests: dict[tuple[str, int, int], str] = {}
        self._lock = threading.Lock()

    def problem(self, f: ReportFile) -> tuple[int, str] | None:
        try:
            st = f.path.stat()
        except OSError:
            return 410, f"{f.name} of this version is no longer on disk."
        key = (str(f.path), st.st_mtime_ns, st.st_size)
        with self._lock:
            digest = self._digests.get(key)
        if digest is None and st.st_size == f.size:
            digest = file_sha256(f.path)
            with self._lock:
                self._digests[key] = digest
        if st.st_size != f.size or digest != f.sha256:
            return 409, f"{f.name} changed on disk since this version recorded it; it is not served."
        return None


class SecurityHeaders:
    """Adds SECURITY_HEADERS to every response (pages, files, errors, redirects)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers if scope["type"] == "http" else send)


class RequireSignIn:
    """Lets through only requests with a valid session (the user goes into `request.state.user`).

    Unknown paths are redirected too, so nothing about the app is visible before signing in.
    """

    OPEN = {"/signin"}

    def __init__(self, app, sessions: Sessions):
        self.app, self.sessions = app, sessions

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] not in self.OPEN:
            request = Request(scope)
            user = self.sessions.read(request.cookies.get(SESSION_COOKIE))
            if user is None:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                await RedirectResponse(f"/signin?next={quote(target, safe='')}", 303)(scope, receive, send)
                return
            scope.setdefault("state", {})["user"] = user
        await self.app(scope, receive, send)


@dataclass(frozen=True)
class Site:
    """What the handlers share, made once by `create_app` and found through `request.app.state.site`."""

    settings: DownloadSettings
    users: Users
    instance: dg.DagsterInstance
    signer: Signer
    sessions: Sessions
    csrf: Csrf
    throttle: Throttle
    integrity: Integrity
    pseudonymiser: Pseudonymiser | None
    pages: Environment

    def render(self, name: str, status_code: int = 200, **context) -> HTMLResponse:
        return HTMLResponse(self.pages.get_template(name).render(**context), status_code=status_code)

    def secure(self, request: Request) -> bool:
        """Whether cookies are marked Secure: always when configured, else on a request seen as https."""
        return self.settings.secure_cookies or request.url.scheme == "https"


def site_of(request: Request) -> Site:
    return request.app.state.site


def signin_page(request: Request, status: int = 200, error: str = "", next_url: str = "/",
                username: str = "", headers: dict | None = None) -> HTMLResponse:
    site = site_of(request)
    nonce = request.cookies.get(CSRF_COOKIE) or site.csrf.new_nonce()
    response = site.render("signin.html", status, csrf=site.csrf.token(nonce), error=error, next=next_url,
                           username=username)
    response.headers.update(headers or {})
    response.set_cookie(CSRF_COOKIE, nonce, max_age=site.csrf.lifetime, httponly=True, samesite="strict",
                        secure=site.secure(request), path="/signin")
    return response


async def signin_form(request: Request) -> Response:
    if site_of(request).sessions.read(request.cookies.get(SESSION_COOKIE)):
        return RedirectResponse("/", 303)
    return signin_page(request, next_url=_safe_next(request.query_params.get("next")))


async def signin(request: Request) -> Response:
    site = site_of(request)
    form = await _small_form(request)
    next_url = _safe_next(form.get("next"))
    if not site.csrf.valid(request.cookies.get(CSRF_COOKIE), form.get("csrf")):
        return signin_page(request, 400, "The form had expired. Please sign in again.", next_url)
    name, password = form.get("username", "").strip(), form.get("password", "")
    keys = (f"user:{name.lower()}", f"ip:{request.client.host if request.client else '?'}")
    if wait := site.throttle.retry_after(*keys):
        return too_many(request, wait, next_url, name)
    user = await run_in_threadpool(site.users.authenticate, name, password)
    if user is None:
        site.throttle.failed(*keys)
        if wait := site.throttle.retry_after(*keys):
            return too_many(request, wait, next_url, name)
        return signin_page(request, 401, "Wrong user name or password.", next_url, name)
    site.throttle.succeeded(keys[0])
    response = RedirectResponse(next_url, 303)
    response.set_cookie(SESSION_COOKIE, site.sessions.issue(user), max_age=site.sessions.lifetime, httponly=True,
                        samesite="strict", secure=site.secure(request), path="/")
    response.delete_cookie(CSRF_COOKIE, path="/signin")
    return response


def too_many(request: Request, wait: int, next_url: str, username: str) -> HTMLResponse:
    minutes = max(1, round(wait / 60))
    return signin_page(request, 429, f"Too many failed sign-ins. Try again in about {minutes} minute(s).",
                       next_url, username, headers={"Retry-After": str(wait)})


async def signout(request: Request) -> Response:
    form = await _small_form(request)
    cookie = request.cookies.get(SESSION_COOKIE, "")
    if not site_of(request).signer.valid("signout", cookie, form.get("csrf", "")):
        raise HTTPException(400, "The sign-out form had expired; reload the page and try again.")
    response = RedirectResponse("/signin", 303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def versions_page(request: Request) -> HTMLResponse:
    site = site_of(request)
    user: User = request.state.user
    versions = list_versions(site.instance, site.settings.versions_shown)
    return site.render("versions.html", user=user, auditor=user.role == "auditor", versions=versions,
                       latest=versions[0] if versions else None, columns=TOTAL_COLUMNS,
                       dagster_url=site.settings.dagster_url.rstrip("/"),
                       signout_csrf=site.signer.sign("signout", request.cookies.get(SESSION_COOKIE, "")))


def version_file(request: Request) -> Response:
    site = site_of(request)
    version = get_version(site.instance, request.path_params["storage_id"])
    return report_file(site, request.state.user, version, request.path_params["name"])


def latest_file(request: Request) -> Response:
    site = site_of(request)
    return report_file(site, request.state.user, latest_version(site.instance), request.path_params["name"])


def report_file(site: Site, user: User, version: Version | None, name: str) -> Response:
    """One recorded file of a version, as recorded (accountant) or pseudonymised (auditor), if still intact."""
    if version is None or name not in version.files:
        raise HTTPException(404, "No such report file.")
    auditor = user.role == "auditor"
    # An auditor's copy is built from the ids in the workbook and CSV too: all of them must be intact.
    for f in version.files.values() if auditor else [version.files[name]]:
        if problem := site.integrity.problem(f):
            raise HTTPException(*problem)
    try:
        path = site.pseudonymiser.file(version, name) if auditor else version.files[name].path
    except LookupError as exc:
        raise HTTPException(409, f"{exc}, so it cannot be pseudonymised.") from None
    stem, suffix = name.rsplit(".", 1)
    filename = f"{version.label}-{stem}{'-pseudonymised' if auditor else ''}.{suffix}"
    return FileResponse(path, filename=filename, media_type=MEDIA_TYPES[f".{suffix}"])


async def http_error(request: Request, exc: HTTPException) -> HTMLResponse:
    return site_of(request).render("error.html", exc.status_code, status=exc.status_code, message=exc.detail)


@asynccontextmanager
async def lifespan(app: Starlette):
    yield
    app.state.site.instance.dispose()


ROUTES = [
    Route("/signin", signin_form, methods=["GET"]),
    Route("/signin", signin, methods=["POST"]),
    Route("/signout", signout, methods=["POST"]),
    Route("/", versions_page, methods=["GET"]),
    Route("/versions/{storage_id:int}/{name}", version_file, methods=["GET"]),
    Route("/latest/{name}", latest_file, methods=["GET"]),
]


def create_app(settings: DownloadSettings) -> Starlette:
    """The ASGI app; raises ConfigError (before anything is served) when a start-up rule fails."""
    users = load_users(settings)
    signer = Signer(settings.secret)
    pages = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True)
    pages.filters["size"] = _size
    site = Site(
        settings=settings, users=users, instance=dg.DagsterInstance.from_config(str(settings.dagster_home)),
        signer=signer, sessions=Sessions(signer, users, int(settings.session_hours * 3600)), csrf=Csrf(signer),
        throttle=Throttle(), integrity=Integrity(),
        pseudonymiser=Pseudonymiser(settings.pseudonym_key, settings.cache_dir) if settings.pseudonym_key else None,
        pages=pages)
    app = Starlette(routes=ROUTES, exception_handlers={HTTPException: http_error}, lifespan=lifespan)
    app.state.site = site
    app.add_middleware(RequireSignIn, sessions=site.sessions)
    app.add_middleware(SecurityHeaders)
    return app


def _size(n: int) -> str:
    for unit in ("bytes", "KB", "MB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def _safe_next(value: str | None) -> str:
    """A local path to go to after signing in; anything else (another site, `//host`) becomes `/`."""
    return value if value and SAFE_NEXT.fullmatch(value) else "/"


async def _small_form(request: Request) -> dict[str, str]:
    """An urlencoded form of at most FORM_LIMIT bytes (no multipart parser needed), first value per field."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > FORM_LIMIT:
            raise HTTPException(413, "Form too large.")
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[0] for k, v in fields.items()}
