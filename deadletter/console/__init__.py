"""The dead-letter console: a server-rendered Flask blueprint mounted at /console.

`register_console(app, settings, make_runtime)` is called by `calehr.web.create_app` when
`[console] secret_key` is set. Everything the console needs lives in `ConsoleContext`.
"""

from __future__ import annotations

from datetime import timedelta

from flask import Flask

from core.config import Settings
from core.runtime import RuntimeFactory
from deadletter.console.blueprint import console_bp


def register_console(app: Flask, settings: Settings, make_runtime: RuntimeFactory) -> None:
    from deadletter.console import (  # noqa: F401 - routes attach to console_bp
        actions,
        auth,
        oidc,
        status_view,
        views,
    )
    from deadletter.console.context import ConsoleContext
    from deadletter.console.templating import install_filters

    app.secret_key = settings.console.secret_key
    app.config.update(
        SESSION_COOKIE_NAME="calehr_console",
        SESSION_COOKIE_PATH="/console",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=settings.console.secure_cookies,
        PERMANENT_SESSION_LIFETIME=timedelta(minutes=settings.console.session_minutes),
    )
    if settings.console.trusted_proxy_hops:  # the login throttle needs the real client address
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.console.trusted_proxy_hops)
    app.extensions["calehr_console"] = ConsoleContext.build(settings, make_runtime)
    install_filters(app)
    if settings.oidc.issuer:
        from deadletter.console.oidc import register_oidc

        register_oidc(app, settings)

    @app.context_processor
    def oidc_label() -> dict[str, str]:
        return {"oidc_label": settings.oidc.label if settings.oidc.issuer else ""}

    app.register_blueprint(console_bp)
