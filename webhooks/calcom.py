"""POST /webhooks/calcom: verify, validate, store encrypted, enqueue the id, answer 202."""

from __future__ import annotations

import logging

import redis
from flask import Blueprint, jsonify, request

from adapters.calcom.payload import parse_body
from core.errors import PayloadError
from core.spool import SpoolFull
from webhooks.context import bridge
from webhooks.signing import verify

log = logging.getLogger(__name__)
bp = Blueprint("calcom", __name__, url_prefix="/webhooks")


def _error(status: int, error: str, detail: str, trigger: str = "unknown"):
    _count(trigger, str(status))
    return jsonify(error=error, detail=detail), status


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


def _count(trigger: str, outcome: str) -> None:
    label = trigger if trigger in KNOWN_TRIGGERS else "other"
    bridge().metrics.inc("webhooks", label, outcome)


def _spool(ctx, raw: bytes, trigger: str, exc: Exception):
    """Redis is unreachable: keep the signed body on local disk (fsync'd) rather than lose it."""
    log.error("event store unavailable: %s", exc.__class__.__name__)
    if ctx.spool is None:
        return _error(503, "store_unavailable", "the event store cannot be reached; retry later")
    try:
        spool_id = ctx.spool.append(raw, trigger)
    except SpoolFull as full:
        log.error("spool full: %s", full)
        return _error(503, "spool_full", "the event store is down and the local spool is full",
                      trigger)
    except OSError as err:
        log.error("spool write failed: %s", err.__class__.__name__)
        return _error(503, "store_unavailable", "the event store and the spool are unavailable")
    _count(trigger, "spooled")
    log.warning("webhook spooled", extra={"spool_id": spool_id, "trigger": trigger,
                                          "outcome": "spooled"})
    return jsonify(event_id=None, spool_id=spool_id, duplicate=False, spooled=True), 202


@bp.post("/calcom")
def receive():
    ctx = bridge()
    limit = ctx.settings.calcom.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        return _error(413, "payload_too_large", f"body is larger than {limit} bytes")
    raw = request.stream.read(limit + 1)
    if len(raw) > limit:
        return _error(413, "payload_too_large", f"body is larger than {limit} bytes")
    if not verify(raw, request.headers.get("X-Cal-Signature-256"), ctx.settings.calcom.webhook_secrets):
        log.warning("webhook rejected: signature missing or wrong", extra={"outcome": "401"})
        return _error(401, "invalid_signature",
                      "X-Cal-Signature-256 is missing or does not match any configured secret")
    try:
        body = parse_body(raw)
    except PayloadError as exc:
        log.warning("webhook rejected: %s", exc, extra={"outcome": str(exc.status)})
        return _error(exc.status, "invalid_payload" if exc.status == 422 else "malformed_json",
                      str(exc))
    if body.trigger == "PING":
        _count("PING", "ping")
        return jsonify(status="ok", trigger="PING"), 200
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
        return jsonify(event_id=event_id, duplicate=duplicate, ignored=True), 202
    log.debug("webhook accepted", extra={"event_id": event_id, "trigger": body.trigger,
                                        "outcome": "duplicate" if duplicate else "accepted"})
    return jsonify(event_id=event_id, duplicate=duplicate), 202
