"""Jinja filters and globals for the console templates."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from flask import Flask
from markupsafe import Markup, escape

from deadletter.console.masking import MASK


def utc_time(ts: float | None, seconds: bool = True) -> str:
    if not ts:
        return "-"
    fmt = "%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M"
    return datetime.fromtimestamp(ts, UTC).strftime(fmt) + "Z"


_MASKED_HTML = Markup(f'<span class="masked">{MASK}</span>')  # noqa: S704 - a constant


def highlight_masks(text: str) -> Markup:
    """Escape the text, then mark every masked value so it stands out."""
    return escape(text).replace(MASK, _MASKED_HTML)


def details_text(details: dict[str, Any] | None) -> str:
    if not details:
        return ""
    return ", ".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}"
                     for k, v in details.items())


def install_filters(app: Flask) -> None:
    from deadletter.console.auth import csrf_token, current_user

    app.jinja_env.filters["utc"] = utc_time
    app.jinja_env.filters["masks"] = highlight_masks
    app.jinja_env.filters["details"] = details_text
    app.jinja_env.globals["csrf_token"] = csrf_token
    app.jinja_env.globals["console_user"] = current_user
