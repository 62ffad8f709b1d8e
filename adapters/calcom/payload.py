"""Cal.com webhook bodies: validation and normalisation into `AppointmentEvent`.

Both shapes are handled: the wrapped `{triggerEvent, createdAt, payload}` and the flat
`MEETING_*` body (a Booking row with `triggerEvent` at the root). Pure: no I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from core.errors import PayloadError
from core.models import TRIGGER_KINDS, AppointmentEvent, EventKind, Person

BOOKING_FIELDS = ("uid", "startTime", "endTime", "organizer")
FLAT_FIELDS = ("uid", "startTime", "endTime")


@dataclass(frozen=True)
class WebhookBody:
    """A parsed body: the trigger, the send time and the booking fields."""

    trigger: str
    created_at: datetime | None
    payload: dict[str, Any]
    flat: bool

    @property
    def handled(self) -> bool:
        return self.trigger in TRIGGER_KINDS


_TRIGGER_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def parse_body(raw: bytes) -> WebhookBody:
    """Parse and check a raw body. Raises PayloadError with 400 or 422 and a clear reason."""
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadError(f"body is not valid JSON: {exc.__class__.__name__} at "
                           f"position {getattr(exc, 'pos', 0)}", 400) from None
    except (ValueError, RecursionError) as exc:  # a number too long, nesting too deep
        raise PayloadError(f"body is not acceptable JSON: {exc.__class__.__name__}", 400) \
            from None
    if not isinstance(data, dict):
        raise PayloadError("body must be a JSON object", 400)
    trigger = data.get("triggerEvent")
    if not isinstance(trigger, str) or not trigger:
        raise PayloadError("missing field: triggerEvent", 422)
    if not _TRIGGER_NAME.fullmatch(trigger):  # it is stored and logged as text
        raise PayloadError("field triggerEvent is not a trigger name ([A-Z0-9_], at most 64)",
                           422)
    flat = "payload" not in data
    payload = data if flat else data.get("payload")
    if not isinstance(payload, dict):
        raise PayloadError("field payload must be an object", 422)
    created_raw = data.get("createdAt")
    created_at = _parse_time(created_raw, "createdAt") if created_raw else None
    body = WebhookBody(trigger=trigger, created_at=created_at, payload=payload, flat=flat)
    if body.handled:
        _check_fields(body)
    return body


def _check_fields(body: WebhookBody) -> None:
    p = body.payload
    kind = TRIGGER_KINDS[body.trigger]
    missing: list[str] = []
    if kind is EventKind.NO_SHOW:
        if not isinstance(p.get("bookingUid"), str) or not p.get("bookingUid"):
            missing.append("payload.bookingUid")
        if not isinstance(p.get("attendees"), list):
            missing.append("payload.attendees")
    else:
        prefix = "" if body.flat else "payload."
        needed = FLAT_FIELDS if body.flat else BOOKING_FIELDS
        missing += [prefix + f for f in needed if p.get(f) in (None, "")]
        if not body.flat and isinstance(p.get("organizer"), dict) is False and \
                "payload.organizer" not in missing:
            missing.append("payload.organizer")
        if kind is EventKind.RESCHEDULED and not p.get("rescheduleUid") and not p.get("iCalUID"):
            missing.append("payload.rescheduleUid")
    if body.created_at is None and not body.flat:
        missing.insert(0, "createdAt")
    if missing:
        raise PayloadError(f"{body.trigger}: missing or empty field(s): {', '.join(missing)}", 422)
    for key in ("startTime", "endTime"):
        if key in p and p[key] is not None:
            _parse_time(p[key], key)


def _parse_time(value: Any, name: str) -> datetime:
    if not isinstance(value, str):
        raise PayloadError(f"field {name} must be an ISO 8601 string", 422)
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise PayloadError(f"field {name} is not an ISO 8601 time", 422) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)  # Cal.com sends UTC
    if not 1900 <= parsed.year <= 2999:  # also keeps zone arithmetic from overflowing
        raise PayloadError(f"field {name} is outside the years 1900-2999", 422)
    return parsed.astimezone(UTC)


def _value(response: Any) -> Any:
    if isinstance(response, dict) and "value" in response:
        return response["value"]
    return None if isinstance(response, dict) else response


def _str(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):
        return str(value.get("value", "") or "")
    return str(value)


def normalise(
    event_id: str,
    body: WebhookBody,
    resolve_key: Callable[[str], str | None] = lambda uid: None,
) -> AppointmentEvent:
    """Turn a checked body into an AppointmentEvent.

    `resolve_key(uid)` returns the appointment key the ledger knows for a uid; it is used
    when `iCalUID` is missing (no-show events, old payloads).
    """
    if not body.handled:
        raise PayloadError(f"trigger {body.trigger} is not handled", 422)
    p = body.payload
    kind = TRIGGER_KINDS[body.trigger]
    if kind is EventKind.NO_SHOW:
        uid = p["bookingUid"]
        flags = [a.get("noShow") for a in p.get("attendees", []) if isinstance(a, dict)]
        return AppointmentEvent(
            event_id=event_id, trigger=body.trigger, kind=kind,
            appointment_key=resolve_key(uid) or uid, uid=uid, previous_uid=None,
            booking_id=p.get("bookingId"), sequence=-1,
            created_at=body.created_at or datetime.now(UTC), start=None, end=None,
            status="ACCEPTED", organizer=Person(), attendee=Person(),
            no_show=any(bool(f) for f in flags),
        )

    uid = str(p["uid"])
    # ids of another type (a fuzzed or hostile body) are ignored, never str()-ed into keys
    previous_uid = next((v for v in (p.get("rescheduleUid"), p.get("fromReschedule"))
                         if isinstance(v, str) and v), None)
    ical_uid = p.get("iCalUID") if isinstance(p.get("iCalUID"), str) else None
    if ical_uid:
        key = str(ical_uid)
    elif previous_uid:
        key = resolve_key(previous_uid) or previous_uid
    else:
        key = resolve_key(uid) or uid

    organizer_raw = p.get("organizer") if not body.flat else p.get("user")
    organizer_raw = organizer_raw if isinstance(organizer_raw, dict) else {}
    organizer = Person(
        name=_str(organizer_raw.get("name")),
        email=_str(organizer_raw.get("email") or p.get("userPrimaryEmail")),
        username=_str(organizer_raw.get("username")),
        timezone=_str(organizer_raw.get("timeZone")),
    )
    attendees_raw = p.get("attendees") if isinstance(p.get("attendees"), list) else []
    attendees = [a for a in attendees_raw if isinstance(a, dict)]
    first = attendees[0] if attendees else {}
    responses_raw = p.get("responses") if isinstance(p.get("responses"), dict) else {}
    responses = {k: _value(v) for k, v in responses_raw.items()}
    extra = p.get("userFieldsResponses")
    for k, v in (extra if isinstance(extra, dict) else {}).items():
        responses.setdefault(k, _value(v))
    name = _str(first.get("name") or responses.get("name"))
    first_name = _str(first.get("firstName"))
    last_name = _str(first.get("lastName"))
    if name and not (first_name or last_name):
        first_name, _, last_name = name.partition(" ")
    attendee = Person(
        name=name,
        email=_str(first.get("email") or responses.get("email")),
        first_name=first_name,
        last_name=last_name,
        phone=_str(responses.get("attendeePhoneNumber") or first.get("phoneNumber")),
        timezone=_str(first.get("timeZone")),
    )
    team = p.get("team")
    sequence = p.get("iCalSequence")
    if body.flat:  # a flat MEETING_* row's createdAt is the booking's; the event is at the time
        created_at = _parse_time(p["endTime" if kind is EventKind.MEETING_ENDED else "startTime"],
                                 "createdAt")
    else:
        created_at = body.created_at or _parse_time(p.get("updatedAt") or p["startTime"],
                                                    "createdAt")
    return AppointmentEvent(
        event_id=event_id,
        trigger=body.trigger,
        kind=kind,
        appointment_key=key,
        uid=uid,
        previous_uid=str(previous_uid) if previous_uid else None,
        booking_id=p.get("bookingId") if not body.flat else p.get("id"),
        sequence=int(sequence) if isinstance(sequence, int) else 0,
        created_at=created_at,
        start=_parse_time(p["startTime"], "startTime"),
        end=_parse_time(p["endTime"], "endTime"),
        status=_str(p.get("status")) or _default_status(kind),
        organizer=organizer,
        attendee=attendee,
        responses=responses,
        location=_str(p.get("location")),
        event_type_id=p.get("eventTypeId"),
        event_type_slug=_str(p.get("type")),
        event_title=_str(p.get("eventTitle")),  # the event type's; the booking title is PHI
        team=_str(team.get("name")) if isinstance(team, dict) else "",
        notes=_str(p.get("additionalNotes") or p.get("description") or responses.get("notes")),
        cancellation_reason=_str(p.get("cancellationReason") or p.get("rejectionReason")),
    )


def _default_status(kind: EventKind) -> str:
    return {
        EventKind.REQUESTED: "PENDING",
        EventKind.CANCELLED: "CANCELLED",
        EventKind.REJECTED: "REJECTED",
    }.get(kind, "ACCEPTED")
