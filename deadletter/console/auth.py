"""Console login and logout, roles, and the checks that run before every console request.

Order of refusals: no live session -> redirect to login (GET) or 401 (anything else);
a POST without the session's CSRF token -> 400; a role too low for the action -> 403.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flask import abort, g, redirect, render_template, request, session, url_for
from werkzeug.security import check_password_hash, generate_password_hash

from core import clock
from deadletter.console.blueprint import console_bp
from deadletter.console.context import console
from deadletter.console.sessions import SessionRecord

ROLE_RANK = {"viewer": 1, "operator": 2, "admin": 3}
PUBLIC_ENDPOINTS = frozenset({"console.login", "console.static", "console.oidc_login",
                              "console.oidc_callback", "console.oidc_finish"})
F = TypeVar("F", bound=Callable[..., Any])
_dummy_hash: list[str] = []


@dataclass(frozen=True)
class ConsoleUser:
    username: str
    role: str
    csrf_token: str
    login_at: float

    @property
    def actor(self) -> str:
        """How the audit log names this person."""
        return f"console:{self.username}"

    def can(self, role: str) -> bool:
        return ROLE_RANK.get(self.role, 0) >= ROLE_RANK[role]


def current_user() -> ConsoleUser | None:
    return g.get("console_user")


def requires(role: str) -> Callable[[F], F]:
    """Refuse (403) unless the logged-in user has at least `role`."""
    def decorate(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            user = current_user()
            if user is None:
                abort(401)
            if not user.can(role):
                abort(403)
            return view(*args, **kwargs)
        return wrapper  # type: ignore[return-value]
    return decorate


def csrf_token() -> str:
    """The token every console form carries (before login: a token bound to the cookie)."""
    user = current_user()
    if user is not None:
        return user.csrf_token
    if "login_csrf" not in session:
        session["login_csrf"] = secrets.token_urlsafe(32)
    return str(session["login_csrf"])


def _token_ok(expected: str | None) -> bool:
    sent = request.form.get("csrf_token", "")  # bytes: compare_digest refuses non-ASCII str
    return bool(expected) and bool(sent) and hmac.compare_digest(
        sent.encode("utf-8", "replace"), str(expected).encode("utf-8", "replace"))


def _session_user(record: SessionRecord | None) -> ConsoleUser | None:
    if record is None:
        return None
    if record.role:  # single sign-on: the role the provider's claim gave at login
        return ConsoleUser(record.username, record.role, record.csrf_token, record.created_at)
    local = console().user(record.username)  # the config's [[users]] or `calehr users`
    if local is None:  # removed since login
        return None
    return ConsoleUser(local.username, local.role, record.csrf_token, record.created_at)


@console_bp.before_request
def load_user_and_check_csrf() -> Any:
    g.console_user = None
    request.max_content_length = console().settings.console.max_request_bytes  # 413 unread
    session_id = session.get("sid")
    if session_id:
        g.console_user = _session_user(console().sessions.touch(session_id))
        if g.console_user is None:
            session.pop("sid", None)
    if request.endpoint in PUBLIC_ENDPOINTS:
        if request.method == "POST" and not _token_ok(session.get("login_csrf")):
            abort(400, "the form expired or did not come from this console; reload and retry")
        return None
    if g.console_user is None:
        if request.method in ("GET", "HEAD"):
            return redirect(url_for("console.login", next=request.full_path.rstrip("?")))
        abort(401)
    if request.method not in ("GET", "HEAD") and not _token_ok(g.console_user.csrf_token):
        abort(400, "missing or wrong CSRF token")
    return None


@console_bp.after_request
def security_headers(response: Any) -> Any:
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'self'; img-src 'self'; script-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
    return response


def _safe_next(target: str | None) -> str:
    default = url_for("console.dead_letter_list")
    if not target:
        return default
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in target):  # CR LF would split Location
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/console/") \
            or target.startswith("//") or "\\" in target:
        return default
    return target


def _password_ok(password_hash: str | None, password: str) -> bool:
    if password_hash is None:  # spend the same time for unknown user names
        if not _dummy_hash:
            _dummy_hash.append(generate_password_hash(secrets.token_hex(16)))
        check_password_hash(_dummy_hash[0], password)
        return False
    return check_password_hash(password_hash, password)


@console_bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    if request.method == "GET":
        if current_user() is not None:
            return redirect(_safe_next(request.args.get("next")))
        return render_template("console/login.html", next=request.args.get("next", ""))
    ctx = console()
    username = request.form.get("username", "").strip()[:100]
    password = request.form.get("password", "")
    next_url = request.form.get("next", "")
    address = request.remote_addr or "unknown"
    verdict = ctx.throttle.attempt(username, address)
    if not verdict.allowed:
        ctx.audit.login_failed(username, address, ctx.throttle.forget_after, blocked=True)
        wait = verdict.retry_after_header
        return render_template("console/login.html", next=next_url, error="Too many failed "
                               f"attempts from here. Try again in {wait} s."), 429, \
            {"Retry-After": wait}
    user = ctx.user(username)
    if not _password_ok(user.password_hash if user else None, password) or user is None:
        ctx.audit.login_failed(username, address, ctx.throttle.forget_after)
        return render_template("console/login.html", next=next_url,
                               error="Wrong user name or password."), 401
    ctx.throttle.succeeded(username, address)
    session.clear()  # a fresh session id on login: no fixation
    session.permanent = True
    session["sid"] = ctx.sessions.create(user.username)
    ctx.audit.record(f"console:{user.username}", "console.login", "console",
                             role=user.role)
    return redirect(_safe_next(next_url))


@console_bp.post("/logout")
def logout() -> Any:
    ctx = console()
    user = current_user()
    session_id = session.get("sid")
    if session_id:
        ctx.sessions.delete(session_id)
    session.clear()
    if user is not None:
        ctx.audit.record(user.actor, "console.logout", "console",
                                 minutes=round((clock.now() - user.login_at) / 60, 1))
    return redirect(url_for("console.login"))
