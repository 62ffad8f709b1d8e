"""A cancelled occurrence of a recurring series: ask Cal.com which occurrences it cancelled.

Cancelling "this and following" (or "all remaining") in Cal.com sends ONE BOOKING_CANCELLED, for
the occurrence the user clicked, and names no `recurringEventId`; the other occurrences are
cancelled in Cal.com without a webhook. So right after such a cancel the bridge reads the series
from Cal.com API v2 and feeds one synthetic BOOKING_CANCELLED for each occurrence Cal.com
cancelled that the EHR still has booked. Synthetic bodies are deterministic: a second run finds
them in the event store and feeds nothing twice.
"""

from __future__ import annotations

import logging

from adapters.calcom.bookings import BookingsClient
from adapters.calcom.http import CalcomApiError
from core import clock
from core.crypto import DecryptError
from core.errors import PayloadError
from core.models import AppointmentEvent
from core.runtime import Runtime
from worker.reconcile import to_webhook_body

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
CANCELLED = ("cancelled", "rejected")


def after_cancel(rt: Runtime, event: AppointmentEvent) -> None:
    """Called once a webhook's cancel is accepted: follow up if it was a recurring occurrence."""
    series = rt.redis.hget(rt.ledger.appt(event.appointment_key), "recurring")
    if not event.recurring and not series:
        return
    if not rt.settings.calcom.api_key:
        log.warning("a recurring occurrence was cancelled; without calcom.api_key the bridge "
                    "cannot learn which other occurrences Cal.com cancelled",
                    extra={"event_id": event.event_id})
        return
    _attempt(rt, event.event_id, 1)


def retry(rt: Runtime, event_id: str) -> None:
    """The sweep found a due follow-up (an earlier attempt could not reach Cal.com)."""
    attempts = int(rt.redis.hget(_attempts_key(rt), event_id) or 0)
    _attempt(rt, event_id, attempts + 1)


def _attempt(rt: Runtime, event_id: str, attempt: int) -> None:
    try:
        result = follow(rt, event_id, BookingsClient(rt.settings.calcom))
    except CalcomApiError as exc:
        if attempt >= MAX_ATTEMPTS or not exc.transient:
            rt.redis.hdel(_attempts_key(rt), event_id)
            rt.audit.record("system", "series.unresolved", event_id, error=str(exc))
            log.error("series follow-up gave up after %d attempt(s): %s", attempt, exc,
                      extra={"event_id": event_id})
            return
        delay = exc.retry_after or min(300.0, 5.0 * 2 ** (attempt - 1))
        rt.redis.hset(_attempts_key(rt), event_id, attempt)
        rt.redis.zadd(rt.ledger.due, {f"series:{event_id}": clock.now() + delay})
        log.warning("series follow-up postponed %.0fs: %s", delay, exc,
                    extra={"event_id": event_id})
        return
    except (KeyError, PayloadError, DecryptError) as exc:  # the cancel's body is gone or unreadable
        rt.redis.hdel(_attempts_key(rt), event_id)
        log.error("series follow-up impossible: %s", exc.__class__.__name__,
                  extra={"event_id": event_id})
        return
    rt.redis.hdel(_attempts_key(rt), event_id)
    log.info("series follow-up occurrences=%d fed=%d", result["occurrences"], result["fed"],
             extra={"event_id": event_id})


def follow(rt: Runtime, event_id: str, client: BookingsClient) -> dict[str, int]:
    """Feed a synthetic cancel for every occurrence Cal.com cancelled and the EHR has booked."""
    from worker.events import load_event

    event, _ = load_event(rt, event_id)
    series = (rt.redis.hget(rt.ledger.appt(event.appointment_key), "recurring") or b"").decode()
    known_series = event.series_uid or (series if series not in ("", "1") else "")
    occurrences = client.series_of(event.uid, known_series)
    fed = 0
    for booking in occurrences:
        uid = booking["uid"]
        if str(booking.get("status", "")).lower() != "cancelled" or uid == event.uid:
            continue
        key = rt.ledger.resolve(uid)
        if key is None:  # never reached the EHR: nothing there to cancel
            continue
        if rt.ledger.uid_statuses(key).get(uid) in CANCELLED:
            continue
        synthetic_id, duplicate = rt.store.put(to_webhook_body(booking), "BOOKING_CANCELLED",
                                               source="reconciliation")
        if not duplicate:
            rt.audit.record("system", "event.synthetic", synthetic_id,
                            trigger="BOOKING_CANCELLED", series_of=event_id)
            rt.reprocess(synthetic_id, False)
            fed += 1
    return {"occurrences": len(occurrences), "fed": fed}


def _attempts_key(rt: Runtime) -> str:
    return f"{rt.settings.key_prefix}:series-attempts"
