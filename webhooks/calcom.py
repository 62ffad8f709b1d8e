"""POST /webhooks/calcom: verify, validate, store encrypted, enqueue the id, answer 202.

The answer is worked out by `answer_webhook` (no Flask in it). `CalcomIngest`, installed in
front of the Flask app (calehr/web.py), serves POST /webhooks/calcom with it directly: Flask's
request and app contexts, routing and response objects cost about as much CPU as the whole
`/healthz` answer, a third of a webhook's (README "Performance"). Every other method and path,
and a test client, go through Flask as before; the blueprint's route answers the same way.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any, BinaryIO

import redis
from flask import Blueprint, Response, request

from adapters.calcom.payload import parse_body
from core.errors import PayloadError
from core.spool import SpoolFull
from webhooks.context import BridgeContext, bridge
from webhooks.signing import verify

log = logging.getLogger(__name__)
bp = Blueprint("calcom", __name__, url_prefix="/webhooks")
PATH = "/webhooks/calcom"
SIGNATURE_HEADER = "X-Cal-Signature-256"

Answer = tuple[int, dict[str, Any]]


def json_bytes(fields: dict[str, Any]) -> bytes:
    """As Flask's jsonify writes it (compact, keys sorted, a newline), for both paths."""
    return json.dumps(fields, separators=(",", ":"), sort_keys=True).encode() + b"\n"


def _error(ctx: BridgeContext, status: int, error: str, detail: str,
           trigger: str = "unknown") -> Answer:
    _count(ctx, trigger, str(status))
    return status, {"error": error, "detail": detail}


# Cal.com's WebhookTriggerEvents (reference/calcom.md) and "unknown" (not parsed yet): the
# metric label takes only these, anything else is "other", so a body cannot mint new series
KNOWN_TRIGGERS = frozenset({
    "PING", "unknown", "BOOKING_CREATED", "BOOKING_RESCHEDULED", "BOOKING_CANCELLED",
    "BOOKING_REQUESTED", "BOOKING_REJECTED", "BOOKING_CONFIRMED", "BOOKING_PAID",
    "BOOKING_PAYMENT_INITIATED", "BOOKING_NO_SHOW_UPDATED", "MEETING_STARTED", "MEETING_ENDED",
    "RECORDING_READY", "RECORDING_TRANSCRIPTION_GENERATED", "INSTANT_MEETING",
    "INSTANT_MEETING_ACCEPTED", "FORM_SUBMITTED", "FORM_SUBMITTED_NO_EVENT", "OOO_CREATED",
    "AFTER_HOSTS_CAL_VIDEO_NO_SHOW", "AFTER_GUESTS_CAL_VIDEO_NO_SHOW",
    "DELEGATION_CREDENTIAL_ERROR",
})


def _count(ctx: BridgeContext, trigger: str, outcome: str) -> None:
    label = trigger if trigger in KNOWN_TRIGGERS else "other"
    ctx.metrics.inc("webhooks", label, outcome)


def _spool(ctx: BridgeContext, raw: bytes, trigger: str, exc: Exception) -> Answer:
    """Redis is unreachable: keep the signed body on local disk (fsync'd) rather than lose it."""
    log.error("event store unavailable: %s", exc.__class__.__name__)
    if ctx.spool is None:
        return _error(ctx, 503, "store_unavailable",
                      "the event store cannot be reached; retry later")
    try:
        spool_id = ctx.spool.append(raw, trigger)
    except SpoolFull as full:
        log.error("spool full: %s", full)
        return _error(ctx, 503, "spool_full",
                      "the event store is down and the local spool is full", trigger)
    except OSError as err:
        log.error("spool write failed: %s", err.__class__.__name__)
        return _error(ctx, 503, "store_unavailable",
                      "the event store and the spool are unavailable")
    _count(ctx, trigger, "spooled")
    log.warning("webhook spooled", extra={"spool_id": spool_id, "trigger": trigger,
                                          "outcome": "spooled"})
    return 202, {"event_id": None, "spool_id": spool_id, "duplicate": False, "spooled": True}


def read_body(stream: BinaryIO, content_length: int | None, limit: int) -> bytes | None:
    """The raw body, or None when it is larger than `limit` bytes (413; the rest stays unread)."""
    if content_length is not None and content_length > limit:
        return None
    raw = stream.read(limit + 1)
    return None if len(raw) > limit else raw


def answer_webhook(ctx: BridgeContext, raw: bytes | None, signature: str | None) -> Answer:
    """(status, JSON fields) for one delivery; a 2xx only after the durable write."""
    limit = ctx.settings.calcom.max_body_bytes
    if raw is None:
        return _error(ctx, 413, "payload_too_large", f"body is larger than {limit} bytes")
    if not verify(raw, signature, ctx.settings.calcom.webhook_secrets):
        log.warning("webhook rejected: signature missing or wrong", extra={"outcome": "401"})
        return _error(ctx, 401, "invalid_signature",
                      f"{SIGNATURE_HEADER} is missing or does not match any configured secret")
    try:
        body = parse_body(raw)
    except PayloadError as exc:
        log.warning("webhook rejected: %s", exc, extra={"outcome": str(exc.status)})
        return _error(ctx, exc.status, "invalid_payload" if exc.status == 422 else "malformed_json",
                      str(exc))
    if body.trigger == "PING":
        _count(ctx, "PING", "ping")
        return 200, {"status": "ok", "trigger": "PING"}
    label = body.trigger if body.trigger in KNOWN_TRIGGERS else "other"
    try:  # one script: store, queue for the dispatcher, count (README "Performance")
        event_id, duplicate = ctx.accept(raw, body.trigger, handled=body.handled,
                                         counter=(label, "accepted" if body.handled else "ignored"))
    except redis.RedisError as exc:
        return _spool(ctx, raw, body.trigger, exc)
    # accepted and ignored webhooks: DEBUG, not INFO. One JSON line per webhook was an eighth of
    # the web's CPU per webhook; the 202 carries the event id, the worker logs each delivery
    # attempt under it, and `calehr web` keeps gunicorn's access log of every request
    if not body.handled:
        log.debug("webhook ignored", extra={"event_id": event_id, "trigger": body.trigger,
                                           "outcome": "ignored"})
        return 202, {"event_id": event_id, "duplicate": duplicate, "ignored": True}
    log.debug("webhook accepted", extra={"event_id": event_id, "trigger": body.trigger,
                                        "outcome": "duplicate" if duplicate else "accepted"})
    return 202, {"event_id": event_id, "duplicate": duplicate}


@bp.post("/calcom")
def receive() -> Response:
    """The same answer through Flask (CalcomIngest serves this route in front of it)."""
    ctx = bridge()
    raw = read_body(request.stream, request.content_length, ctx.settings.calcom.max_body_bytes)
    status, fields = answer_webhook(ctx, raw, request.headers.get(SIGNATURE_HEADER))
    return Response(json_bytes(fields), status, mimetype="application/json")


StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class CalcomIngest:
    """WSGI layer in front of the Flask app: POST /webhooks/calcom without Flask's machinery."""

    def __init__(self, app: WsgiApp, ctx: BridgeContext) -> None:
        self.app, self.ctx = app, ctx

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != PATH or environ.get("REQUEST_METHOD") != "POST":
            return self.app(environ, start_response)
        try:
            length: int | None = int(environ.get("CONTENT_LENGTH") or "")
        except ValueError:
            length = None
        try:
            raw = read_body(environ["wsgi.input"], length, self.ctx.settings.calcom.max_body_bytes)
            status, fields = answer_webhook(self.ctx, raw, environ.get("HTTP_X_CAL_SIGNATURE_256"))
        except Exception:  # noqa: BLE001 - as Flask would: logged (and sent to Sentry), a 500
            log.exception("webhook failed")
            status, fields = 500, {"error": "internal_error",
                                   "detail": "the webhook could not be taken; retry later"}
        data = json_bytes(fields)
        start_response(f"{status} {HTTPStatus(status).phrase}",
                       [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]
