"""Sentry, off unless SENTRY_DSN is set; every event is scrubbed of PHI before it leaves."""

from __future__ import annotations

import os
from typing import Any

from core.redact import MASK, redact_text, scrub

# Only these request headers survive; bodies, cookies and query strings never leave.
_SAFE_HEADERS = {"content-type", "content-length", "user-agent"}


# Exception texts from these are ids, codes and addresses (ours are PHI-free by rule); any other
# exception may echo a value it choked on, such as a patient name, so only its type is kept.
_TRUSTED_MODULES = ("core", "adapters", "worker", "webhooks", "deadletter", "redis", "kombu",
                    "celery", "requests", "urllib3", "ssl", "socket")
_TRUSTED_TYPES = {"OSError", "ConnectionError", "ConnectionRefusedError", "ConnectionResetError",
                  "TimeoutError", "BrokenPipeError", "FileNotFoundError", "PermissionError"}


def _trusted(value: dict[str, Any]) -> bool:
    module = str(value.get("module") or "")
    return value.get("type") in _TRUSTED_TYPES or module.startswith(_TRUSTED_MODULES)


def _scrub_frames(exception: dict[str, Any]) -> None:
    for value in exception.get("values") or []:
        if value.get("value"):
            value["value"] = redact_text(str(value["value"])) if _trusted(value) else MASK
        for frame in (value.get("stacktrace") or {}).get("frames") or []:
            if "vars" in frame:
                frame["vars"] = {k: MASK for k in frame["vars"]}
            for key in ("context_line", "pre_context", "post_context"):
                frame.pop(key, None)


def scrub_event(event: dict[str, Any], _hint: dict[str, Any] | None = None) -> dict[str, Any]:
    """before_send: names, birth dates, phones, emails and notes never reach Sentry."""
    if "exception" in event:
        _scrub_frames(event["exception"])
    for thread in (event.get("threads") or {}).get("values") or []:
        for frame in (thread.get("stacktrace") or {}).get("frames") or []:
            frame.pop("vars", None)
    if "logentry" in event:
        entry = event["logentry"]
        entry["message"] = redact_text(str(entry.get("message", "")))
        entry["formatted"] = redact_text(str(entry.get("formatted", "")))
        entry.pop("params", None)
    if "message" in event and isinstance(event["message"], str):
        event["message"] = redact_text(event["message"])
    request = event.get("request")
    if isinstance(request, dict):
        request.pop("data", None)
        request.pop("cookies", None)
        request.pop("query_string", None)
        headers = request.get("headers") or {}
        request["headers"] = {k: v for k, v in headers.items() if k.lower() in _SAFE_HEADERS}
    for crumb in (event.get("breadcrumbs") or {}).get("values") or []:
        scrub_breadcrumb(crumb)
    event.pop("user", None)
    if "extra" in event:
        event["extra"] = scrub(event["extra"])
    return event


def scrub_breadcrumb(crumb: dict[str, Any], _hint: dict[str, Any] | None = None) -> dict[str, Any]:
    if crumb.get("message"):
        crumb["message"] = redact_text(str(crumb["message"]))
    if crumb.get("data"):
        crumb["data"] = scrub(crumb["data"])
    return crumb


def init_sentry(component: str, env: dict[str, str] | None = None) -> bool:
    env = dict(os.environ) if env is None else env
    dsn = env.get("SENTRY_DSN", "")
    if not dsn:
        return False
    import sentry_sdk
    from sentry_sdk.integrations.celery import CeleryIntegration
    from sentry_sdk.integrations.flask import FlaskIntegration

    sentry_sdk.init(
        dsn=dsn,
        environment=env.get("SENTRY_ENVIRONMENT", "production"),
        release=env.get("SENTRY_RELEASE") or None,
        # the replacement for send_default_pii=False in sentry-sdk 2.7x: no user info, no
        # request bodies, no frame locals or source lines; scrub_event is the second line
        data_collection={"user_info": False, "http_bodies": [], "stack_frame_variables": False,
                         "frame_context_lines": 0},
        integrations=[FlaskIntegration(), CeleryIntegration()],
        before_send=scrub_event,
        before_breadcrumb=scrub_breadcrumb,
        traces_sample_rate=0.0,
        server_name=component,
    )
    return True
