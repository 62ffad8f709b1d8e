"""Console test helpers: a config with users, a logged-in HTTP client, seeded dead letters."""

from __future__ import annotations

import re
from pathlib import Path

import redis
import requests
from werkzeug.security import generate_password_hash

from core.crypto import Cipher
from core.deadletters import DeadLetterStore
from tests.support import KEY, mllp_config

PASSWORDS = {"vera": "viewer-pass-1234", "omar": "operator-pass-1234", "ada": "admin-pass-12345"}
ROLES = {"vera": "viewer", "omar": "operator", "ada": "admin"}
_HASHES: dict[str, str] = {}


def users_toml(session_minutes: int = 30) -> str:
    if not _HASHES:
        _HASHES.update({u: generate_password_hash(p) for u, p in PASSWORDS.items()})
    users = "".join(f'\n[[users]]\nusername = "{u}"\npassword_hash = "{_HASHES[u]}"\n'
                    f'role = "{ROLES[u]}"\n' for u in PASSWORDS)
    return (f'\n[console]\nsecret_key = "test-console-secret-0123456789abcdef"\n'
            f"session_minutes = {session_minutes}\n{users}")


def console_config(outbox: Path, ehr_port: int) -> str:
    """The test stack's config with an MLLP target 'ehr' routed to, plus console users."""
    return mllp_config(outbox, ehr_port) + users_toml()


def dead_letter_store(client: redis.Redis) -> DeadLetterStore:
    return DeadLetterStore(client, Cipher((KEY,)), "calehr")


_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found, "no CSRF token on the page"
    return found.group(1)


class ConsoleClient:
    """A browser-less client: keeps the cookie, reads the CSRF token from pages."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.http = requests.Session()
        self.token = ""

    def get(self, path: str, **kw: object) -> requests.Response:
        r = self.http.get(self.base + path, timeout=10, **kw)
        if r.headers.get("Content-Type", "").startswith("text/html") and "csrf_token" in r.text:
            self.token = csrf_of(r.text)
        return r

    def post(self, path: str, data: dict[str, str] | None = None, csrf: bool = True,
             **kw: object) -> requests.Response:
        form = dict(data or {})
        if csrf:
            form["csrf_token"] = self.token
        return self.http.post(self.base + path, data=form, timeout=10, **kw)

    def login(self, username: str, password: str | None = None) -> requests.Response:
        self.get("/console/login")
        r = self.post("/console/login", {"username": username,
                                         "password": password or PASSWORDS[username]},
                      allow_redirects=False)
        if r.status_code == 302:
            self.get("/console/deadletters")
        return r
