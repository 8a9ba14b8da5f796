"""Who may download: the users file, password hashing, signed session cookies, CSRF tokens, throttling.

The users file holds salted scrypt hashes only (with their parameters, so they
can be raised later without breaking old entries). Sessions are stateless
signed cookies `user|role|expiry|signature`: nothing to store server-side, and a
session whose user was removed or changed role is refused because it is checked
against the users file. Every signature is an HMAC-SHA256 over a purpose prefix,
so a CSRF token can never pass for a session or the other way round.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from calo_assets.atomic import new_file

ROLES = ("accountant", "auditor")
USERNAME = re.compile(r"[A-Za-z0-9._@-]{1,64}")
SCRYPT = {"n": 2**14, "r": 8, "p": 1}
SCRYPT_MAXMEM = 64 * 1024 * 1024  # n=2**14, r=8 needs 16 MiB; room for stronger stored parameters
MIN_PASSWORD = 12


class UsersFileError(ValueError):
    """The users file is missing, unreadable or malformed."""


@dataclass(frozen=True)
class User:
    name: str
    role: str


def hash_password(password: str) -> dict:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, maxmem=SCRYPT_MAXMEM, dklen=32, **SCRYPT)
    return {"scheme": "scrypt", **SCRYPT, "salt": base64.b64encode(salt).decode(),
            "hash": base64.b64encode(digest).decode()}


def verify_password(password: str, stored: dict) -> bool:
    expected = base64.b64decode(stored["hash"])
    digest = hashlib.scrypt(password.encode(), salt=base64.b64decode(stored["salt"]), n=int(stored["n"]),
                            r=int(stored["r"]), p=int(stored["p"]), maxmem=SCRYPT_MAXMEM, dklen=len(expected))
    return hmac.compare_digest(digest, expected)


#: Checked when the user name is unknown, so a wrong name costs as long as a wrong password.
_DUMMY = hash_password(secrets.token_urlsafe(16))


class Users:
    """The users file: {"users": {name: {"role": ..., "password": {scrypt parameters, salt, hash}}}}."""

    def __init__(self, entries: dict[str, dict]):
        self.entries = entries

    @classmethod
    def load(cls, path: Path, missing_ok: bool = False) -> Users:
        if not path.is_file():
            if missing_ok:
                return cls({})
            raise UsersFileError(f"users file {path} does not exist")
        try:
            entries = json.loads(path.read_text(encoding="utf-8"))["users"]
            for name, entry in entries.items():
                if not (USERNAME.fullmatch(name) and entry["role"] in ROLES
                        and entry["password"]["scheme"] == "scrypt"):
                    raise ValueError(f"bad entry for {name!r}")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise UsersFileError(f"users file {path} is not valid ({exc})") from None
        return cls(entries)

    def save(self, path: Path) -> None:
        """Write the file whole (temporary file, then rename), readable by its owner only."""
        with new_file(path, mode=0o600) as tmp, open(tmp, "w", encoding="utf-8") as fh:
            json.dump({"users": self.entries}, fh, indent=2, sort_keys=True)
            fh.write("\n")

    def set(self, name: str, role: str, password: str) -> None:
        if not USERNAME.fullmatch(name):
            raise ValueError("user names are 1-64 letters, digits or . _ @ -")
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        if len(password) < MIN_PASSWORD:
            raise ValueError(f"the password must have at least {MIN_PASSWORD} characters")
        self.entries[name] = {"role": role, "password": hash_password(password)}

    def user(self, name: str) -> User | None:
        entry = self.entries.get(name)
        return User(name, entry["role"]) if entry else None

    def authenticate(self, name: str, password: str) -> User | None:
        entry = self.entries.get(name)
        ok = verify_password(password, entry["password"] if entry else _DUMMY)
        return User(name, entry["role"]) if ok and entry else None

    def roles(self) -> set[str]:
        return {e["role"] for e in self.entries.values()}


class Signer:
    """HMAC-SHA256 signatures over `purpose|text` with the app secret."""

    def __init__(self, secret: str):
        self._key = secret.encode()

    def sign(self, purpose: str, text: str) -> str:
        mac = hmac.new(self._key, f"{purpose}|{text}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def valid(self, purpose: str, text: str, signature: str) -> bool:
        return hmac.compare_digest(self.sign(purpose, text).encode(), signature.encode())


class Sessions:
    """Session cookie values `user|role|expiry|sig`, checked against the users file on every request."""

    def __init__(self, signer: Signer, users: Users, lifetime_seconds: int):
        self.signer, self.users, self.lifetime = signer, users, lifetime_seconds

    def issue(self, user: User) -> str:
        text = f"{user.name}|{user.role}|{int(time.time()) + self.lifetime}"
        return f"{text}|{self.signer.sign('session', text)}"

    def read(self, cookie: str | None) -> User | None:
        parts = (cookie or "").split("|")
        if len(parts) != 4 or not parts[2].isdigit():
            return None
        name, role, expiry, sig = parts
        if not self.signer.valid("session", f"{name}|{role}|{expiry}", sig) or int(expiry) < time.time():
            return None
        user = self.users.user(name)
        return user if user is not None and user.role == role else None


class Csrf:
    """Signed double-submit tokens: the form token is bound to a random nonce held in a SameSite=Strict cookie.

    A page of another site can neither read the token nor make the browser send
    the nonce cookie with its POST, so it cannot sign anyone in or out.
    """

    def __init__(self, signer: Signer, lifetime_seconds: int = 3600):
        self.signer, self.lifetime = signer, lifetime_seconds

    @staticmethod
    def new_nonce() -> str:
        return secrets.token_urlsafe(16)

    def token(self, nonce: str) -> str:
        expiry = str(int(time.time()) + self.lifetime)
        return f"{expiry}.{self.signer.sign('csrf', f'{nonce}|{expiry}')}"

    def valid(self, nonce: str | None, token: str | None) -> bool:
        expiry, _, sig = (token or "").partition(".")
        return bool(nonce) and expiry.isdigit() and int(expiry) >= time.time() and \
            self.signer.valid("csrf", f"{nonce}|{expiry}", sig)


class Throttle:
    """Failed sign-ins per key (a user name, a client IP): `limit` failures within `window` lock the key.

    In memory: a restart forgets failures, which only helps someone who can
    restart the server anyway. A success clears the user name's count, not the
    IP's, so one valid account cannot be used to keep guessing others.
    """

    def __init__(self, limit: int = 5, window: float = 15 * 60, lockout: float = 15 * 60):
        self.limit, self.window, self.lockout = limit, window, lockout
        self._failures: dict[str, deque[float]] = {}
        self._locked_until: dict[str, float] = {}
        self._lock = threading.Lock()

    def retry_after(self, *keys: str) -> int:
        """Seconds until every key is unlocked (0: none is locked)."""
        now = time.monotonic()
        with self._lock:
            return max((int(self._locked_until.get(k, 0) - now) + 1 for k in keys
                        if self._locked_until.get(k, 0) > now), default=0)

    def failed(self, *keys: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._forget(now)
            for key in keys:
                recent = self._failures.setdefault(key, deque())
                recent.append(now)
                if len(recent) >= self.limit:
                    self._locked_until[key] = now + self.lockout
                    recent.clear()

    def succeeded(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)

    def _forget(self, now: float) -> None:
        """Drop failures older than the window and expired locks, so memory stays bounded."""
        for key in list(self._failures):
            recent = self._failures[key]
            while recent and recent[0] < now - self.window:
                recent.popleft()
            if not recent:
                del self._failures[key]
        for key in [k for k, until in self._locked_until.items() if until <= now]:
            del self._locked_until[key]
