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

from core import clock
from core.errors import PayloadError
from core.models import TRIGGER_KINDS, UNKNOWN_SEQUENCE, AppointmentEvent, EventKind, Person

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
        if kind is EventKind.RESCHEDULED and not any(
                p.get(f) for f in ("rescheduleUid", "rootBookingUid", "iCalUID")):
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


def appointment_key(uid: str, previous_uid: str | None, root_uid: str | None,
                    resolve_key: Callable[[str], str | None]) -> str:
    """One key for a booking's whole life, whatever identifiers a body carries.

    The ledger decides first: a uid it has seen (this one, the one it replaces, the chain's
    root) keeps the key it was given, which also keeps keys of older ledgers (iCalUIDs). A new
    booking is keyed by the root of its uid chain: every later body names it, or names a uid
    chained to it (`rescheduleUid`, `rootBookingUid`). iCalUID is not used: Cal.com leaves it
    out after a confirmation, a payment, a rejection and for some reschedules.
    """
    for candidate in (uid, previous_uid, root_uid):
        if candidate:
            known = resolve_key(candidate)
            if known:
                return known
    return root_uid or previous_uid or uid


def normalise(
    event_id: str,
    body: WebhookBody,
    resolve_key: Callable[[str], str | None] = lambda uid: None,
) -> AppointmentEvent:
    """Turn a checked body into an AppointmentEvent.

    `resolve_key(uid)` returns the appointment key the ledger knows for a booking uid.
    """
    if not body.handled:
        raise PayloadError(f"trigger {body.trigger} is not handled", 422)
    p = body.payload
    kind = TRIGGER_KINDS[body.trigger]
    if kind is EventKind.NO_SHOW:
        return _no_show(event_id, body, resolve_key)

    uid = _text_or_none(p.get("uid"))
    if uid is None:
        raise PayloadError("payload.uid must be a non-empty string", 422)
    if not isinstance(p.get("attendees", []), list):  # the patient would be guessed from nothing
        raise PayloadError("payload.attendees must be an array", 422)
    previous_uid = _text_or_none(p.get("rescheduleUid") or p.get("fromReschedule"))
    key = appointment_key(uid, previous_uid, _text_or_none(p.get("rootBookingUid")), resolve_key)

    organizer_raw = p.get("organizer") if not body.flat else p.get("user")
    organizer_raw = organizer_raw if isinstance(organizer_raw, dict) else {}
    organizer = Person(
        name=_str(organizer_raw.get("name")),
        email=_str(organizer_raw.get("email") or p.get("userPrimaryEmail")),
        username=_str(organizer_raw.get("username")),
        timezone=_str(organizer_raw.get("timeZone")),
    )
    responses_raw = p.get("responses") if isinstance(p.get("responses"), dict) else {}
    responses = {k: _value(v) for k, v in responses_raw.items()}
    extra = p.get("userFieldsResponses")
    for k, v in (extra if isinstance(extra, dict) else {}).items():
        responses.setdefault(k, _value(v))
    first = _patient(p, responses, organizer.email)
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
        sequence=sequence if _is_count(sequence) else UNKNOWN_SEQUENCE,
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
        notes=_booker_notes(p, responses),
        cancellation_reason=_str(p.get("cancellationReason") or p.get("rejectionReason")),
        ical_uid=_str(p.get("iCalUID")),
        recurring=bool(p.get("recurringEventId") or p.get("recurringEvent")),
        series_uid=_str(p.get("recurringEventId")),
    )


def _no_show(event_id: str, body: WebhookBody,
             resolve_key: Callable[[str], str | None]) -> AppointmentEvent:
    """BOOKING_NO_SHOW_UPDATED (a person marked it) or AFTER_GUESTS_CAL_VIDEO_NO_SHOW (Cal Video
    saw no guest join): the booking it names, and whether its attendees are absent."""
    p = body.payload
    uid = _text_or_none(p.get("bookingUid"))
    if uid is None:
        raise PayloadError("payload.bookingUid must be a non-empty string", 422)
    flags = [bool(a.get("noShow")) for a in _list(p.get("attendees")) if isinstance(a, dict)]
    if not flags and body.trigger == "AFTER_GUESTS_CAL_VIDEO_NO_SHOW":
        flags = [True]  # the trigger itself says no guest joined
    return AppointmentEvent(
        event_id=event_id, trigger=body.trigger, kind=EventKind.NO_SHOW,
        appointment_key=appointment_key(uid, None, None, resolve_key), uid=uid,
        previous_uid=None, booking_id=p.get("bookingId"), sequence=UNKNOWN_SEQUENCE,
        created_at=body.created_at or clock.now_utc(), start=None, end=None,
        status="ACCEPTED", organizer=Person(), attendee=Person(), no_show=any(flags),
    )


def _patient(p: dict[str, Any], responses: dict[str, Any], organizer_email: str) -> dict:
    """The attendee who booked: the one with the booker's e-mail, else the first who is not staff
    (Cal.com lists a team event's co-host among the attendees of a cancel)."""
    raw = p.get("attendees")
    attendees = [a for a in (raw if isinstance(raw, list) else []) if isinstance(a, dict)]
    booker = _str(responses.get("email")).lower()
    team = p.get("team") if isinstance(p.get("team"), dict) else {}
    staff = {organizer_email.lower()} | {_str(m.get("email")).lower()
                                         for m in _list(team.get("members")) if isinstance(m, dict)}
    for wanted in (lambda e: booker and e == booker, lambda e: e not in staff):
        for a in attendees:
            if wanted(_str(a.get("email")).lower()):
                return a
    return attendees[0] if attendees else {}


def _booker_notes(p: dict[str, Any], responses: dict[str, Any]) -> str:
    """What the booker wrote. Never `description`: Cal.com fills it with the event type's
    description when the booker wrote nothing."""
    return _str(p.get("additionalNotes") or responses.get("notes"))


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _text_or_none(value: Any) -> str | None:
    return str(value) if isinstance(value, str | int) and str(value) else None


def _default_status(kind: EventKind) -> str:
    return {
        EventKind.REQUESTED: "PENDING",
        EventKind.CANCELLED: "CANCELLED",
        EventKind.REJECTED: "REJECTED",
    }.get(kind, "ACCEPTED")
