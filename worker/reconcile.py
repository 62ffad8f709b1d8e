"""Reconciliation: bookings Cal.com changed without a webhook reaching us become synthetic events.

Safe to run every minute: a booking the ledger already has in the same state is skipped, and the
synthetic body is deterministic, so the event store's exact-duplicate check drops a second copy.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from typing import Any

from adapters.calcom.bookings import BookingsClient
from adapters.calcom.http import CalcomApiError
from core import clock
from core.models import EventKind
from core.runtime import Runtime

log = logging.getLogger(__name__)

OVERLAP = timedelta(minutes=5)  # clock skew between Cal.com and us
STATUS_TRIGGERS = {"cancelled": "BOOKING_CANCELLED", "rejected": "BOOKING_REJECTED",
                   "pending": "BOOKING_REQUESTED", "unconfirmed": "BOOKING_REQUESTED"}
TRIGGER_KIND = {"BOOKING_CANCELLED": EventKind.CANCELLED, "BOOKING_REJECTED": EventKind.REJECTED,
                "BOOKING_REQUESTED": EventKind.REQUESTED, "BOOKING_CREATED": EventKind.CREATED,
                "BOOKING_RESCHEDULED": EventKind.RESCHEDULED}


def trigger_for(booking: dict[str, Any]) -> str:
    status = str(booking.get("status", "")).lower()
    if status in STATUS_TRIGGERS:
        return STATUS_TRIGGERS[status]
    return "BOOKING_RESCHEDULED" if booking.get("rescheduledFromUid") else "BOOKING_CREATED"


def to_webhook_body(booking: dict[str, Any]) -> bytes:
    """The Cal.com webhook this booking change would have sent (wrapped shape), deterministic."""
    trigger = trigger_for(booking)
    host = (booking.get("hosts") or [{}])[0]
    event_type = booking.get("eventType") or {}
    responses = {k: {"label": k, "value": v}
                 for k, v in (booking.get("bookingFieldsResponses") or {}).items()}
    payload = {
        "uid": booking["uid"], "bookingId": booking.get("id"),
        "startTime": booking["start"], "endTime": booking["end"],
        "organizer": {"name": host.get("name", ""), "email": host.get("email", ""),
                      "username": host.get("username", ""), "timeZone": host.get("timeZone", "")},
        "attendees": [{"name": a.get("name", ""), "email": a.get("email", ""),
                       "timeZone": a.get("timeZone", ""), "phoneNumber": a.get("phoneNumber")}
                      for a in booking.get("attendees") or []],
        "responses": responses, "location": booking.get("location") or "",
        "type": event_type.get("slug", ""), "eventTypeId": booking.get("eventTypeId"),
        "title": booking.get("title", ""), "status": str(booking.get("status", "")).upper(),
        "cancellationReason": booking.get("cancellationReason") or "",
        "rescheduleUid": booking.get("rescheduledFromUid"),
        "iCalUID": booking.get("icsUid") or booking.get("iCalUID"),
        "iCalSequence": booking.get("iCalSequence"),
        "recurringEventId": booking.get("recurringBookingUid"),  # an occurrence of a series
    }
    payload = {k: v for k, v in payload.items() if v is not None}
    body = {"triggerEvent": trigger, "createdAt": booking.get("updatedAt") or booking["start"],
            "payload": payload, "synthetic": "reconciliation"}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def _already_known(rt: Runtime, booking: dict[str, Any], trigger: str) -> bool:
    key = rt.ledger.resolve(booking["uid"])
    if key is None:
        return False
    status = rt.ledger.uid_statuses(key).get(booking["uid"])
    kind = TRIGGER_KIND[trigger]
    if status == kind.value:
        return True
    # a webhook already moved it further along (created after requested, cancelled after created)
    order = ["requested", "created", "rescheduled", "cancelled", "rejected"]
    return status in order and kind.value in order and order.index(status) > order.index(kind.value)


def reconcile(rt: Runtime, client: BookingsClient) -> dict[str, int]:
    wm_key = f"{rt.settings.key_prefix}:reconcile:watermark"
    raw = rt.redis.get(wm_key)
    watermark = datetime.fromisoformat(raw.decode()) if raw else clock.now_utc() - timedelta(days=1)
    after = (watermark - OVERLAP).isoformat().replace("+00:00", "Z")
    seen = fed = known = 0
    newest = watermark
    try:
        for booking in client.updated_since(after):
            seen += 1
            trigger = trigger_for(booking)
            updated = booking.get("updatedAt")
            if updated:
                newest = max(newest, datetime.fromisoformat(updated.replace("Z", "+00:00")))
            if booking.get("rescheduled") or booking.get("rescheduledToUid"):
                known += 1  # the old half of a reschedule: its successor carries the change
                continue
            if _already_known(rt, booking, trigger):
                known += 1
                continue
            event_id, duplicate = rt.store.put(to_webhook_body(booking), trigger,
                                               source="reconciliation")
            if not duplicate:
                rt.audit.record("system", "event.synthetic", event_id, trigger=trigger)
                rt.reprocess(event_id, False)
                fed += 1
    except CalcomApiError as exc:
        log.warning("reconciliation stopped: %s", exc)
        if exc.retry_after:
            rt.redis.set(f"{rt.settings.key_prefix}:reconcile:not-before", "1",
                         ex=max(1, int(exc.retry_after)))
        rt.redis.set(wm_key, newest.isoformat())
        return {"seen": seen, "fed": fed, "known": known, "error": 1}
    rt.redis.set(wm_key, newest.isoformat())
    log.info("reconciliation seen=%d fed=%d known=%d", seen, fed, known)
    return {"seen": seen, "fed": fed, "known": known, "error": 0}
