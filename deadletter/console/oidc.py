"""Optional console sign-in with the hospital's OpenID provider (Authlib, authorization code + PKCE).

/console/oidc/login sends the browser to the provider; the provider sends it back to
/console/oidc/callback. The console's cookie is SameSite=Strict, so a browser does not send it
on that cross-site redirect: the callback answers with a page that moves on to
/console/oidc/finish from our own origin, where the cookie (holding Authlib's state and nonce)
is sent and the code is exchanged. The role comes from a claim (`[oidc] role_claim`) whose
values are mapped to viewer/operator/admin; the highest match wins, no match is refused.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from authlib.common.errors import AuthlibBaseError
from authlib.integrations.flask_client import OAuth
from flask import Flask, abort, redirect, render_template, request, session, url_for
from requests import RequestException

from core.config import OidcSettings, Settings
from deadletter.console.blueprint import console_bp
from deadletter.console.context import console

CLIENT = "hospital"
RANK = ("viewer", "operator", "admin")


def register_oidc(app: Flask, settings: Settings) -> None:
    oidc = settings.oidc
    oauth = OAuth(app)
    oauth.register(CLIENT, client_id=oidc.client_id, client_secret=oidc.client_secret,
                   server_metadata_url=f"{oidc.issuer}/.well-known/openid-configuration",
                   client_kwargs={"scope": oidc.scopes, "code_challenge_method": "S256",
                                  "timeout": 10})
    app.extensions["calehr_oidc"] = oauth


def role_for(claims: dict[str, Any], oidc: OidcSettings) -> str | None:
    """The highest role any value of the role claim grants, or None."""
    value = claims.get(oidc.role_claim)
    values = {value} if isinstance(value, str) else {v for v in value or () if isinstance(v, str)}
    granted = [role for role, mapped in (("viewer", oidc.viewer_values),
                                         ("operator", oidc.operator_values),
                                         ("admin", oidc.admin_values)) if values & set(mapped)]
    return max(granted, key=RANK.index) if granted else None


def _client() -> Any:
    from flask import current_app

    return current_app.extensions["calehr_oidc"].create_client(CLIENT)


def _redirect_uri() -> str:
    public = console().settings.web.public_url.rstrip("/")
    return f"{public}/console/oidc/callback" if public else url_for("console.oidc_callback",
                                                                     _external=True)


@console_bp.get("/oidc/login")
def oidc_login() -> Any:
    if "calehr_oidc" not in _app_extensions():
        abort(404)
    try:
        return _client().authorize_redirect(_redirect_uri())
    except (RequestException, AuthlibBaseError, ValueError) as exc:
        console().audit.record("console:oidc", "console.oidc_unavailable", "console",
                               error=type(exc).__name__)
        abort(502)


@console_bp.get("/oidc/callback")
def oidc_callback() -> Any:
    if "calehr_oidc" not in _app_extensions():
        abort(404)
    params = {k: request.args[k] for k in ("code", "state", "error", "iss") if k in request.args}
    target = url_for("console.oidc_finish") + "?" + urlencode(params)
    return render_template("console/continue.html", target=target)


@console_bp.get("/oidc/finish")
def oidc_finish() -> Any:
    if "calehr_oidc" not in _app_extensions():
        abort(404)
    ctx = console()
    oidc = ctx.settings.oidc
    if "error" in request.args:
        ctx.audit.record("console:oidc", "console.login_failed", "console", method="oidc",
                         error=request.args["error"][:60])
        return _refused("The identity provider did not sign you in.", 401)
    client = _client()
    try:
        # a redirect must not carry the code, the client secret or the token to another host
        token = client.authorize_access_token(allow_redirects=False)
        claims = dict(token.get("userinfo") or {})
        if oidc.role_claim not in claims or oidc.username_claim not in claims:
            claims.update(client.userinfo(token=token, allow_redirects=False))
    except (RequestException, AuthlibBaseError, ValueError) as exc:
        ctx.audit.record("console:oidc", "console.login_failed", "console", method="oidc",
                         error=type(exc).__name__)
        return _refused("Sign-in could not be completed. Start again.", 401)
    name = claims.get(oidc.username_claim) or claims.get("sub")
    if not isinstance(name, str) or not name:
        return _refused("The identity provider sent no user name.", 401)
    username = f"oidc:{name[:100]}"
    role = role_for(claims, oidc)
    if role is None:
        ctx.audit.record(f"console:{username}", "console.login_refused", "console",
                         method="oidc", reason="no role")
        return _refused("Your account has no role for this console. Ask an administrator to "
                        "add you to one of its groups.", 403)
    session.clear()  # a fresh session id on login: no fixation
    session.permanent = True
    session["sid"] = ctx.sessions.create(username, role=role)
    ctx.audit.record(f"console:{username}", "console.login", "console", role=role, method="oidc")
    return redirect(url_for("console.dead_letter_list"))


def _app_extensions() -> dict[str, Any]:
    from flask import current_app

    return current_app.extensions


def _refused(message: str, code: int) -> Any:
    return render_template("console/error.html", code=code, message=message, detail=""), code
