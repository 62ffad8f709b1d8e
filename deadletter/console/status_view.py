"""GET /console/status: the bridge's health in one look (any signed-in role; no PHI)."""

from __future__ import annotations

from typing import Any

from flask import render_template

from deadletter.console.auth import requires
from deadletter.console.blueprint import console_bp
from deadletter.console.context import console
from deadletter.status import collect


@console_bp.get("/status")
@requires("viewer")
def status_page() -> Any:
    ctx = console()
    return render_template("console/status.html", s=collect(ctx.settings, ctx.redis))
