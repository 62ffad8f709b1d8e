"""Domain types shared by every package. No I/O here."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class EventKind(StrEnum):
    REQUESTED = "requested"
    CREATED = "created"
    RESCHEDULED = "rescheduled"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    NO_SHOW = "no_show"
    MEETING_ENDED = "meeting_ended"


# Cal.com trigger -> kind. Triggers not listed here are recorded as ignored.
TRIGGER_KINDS: dict[str, EventKind] = {
    "BOOKING_REQUESTED": EventKind.REQUESTED,
    "BOOKING_CREATED": EventKind.CREATED,
    "BOOKING_RESCHEDULED": EventKind.RESCHEDULED,
    "BOOKING_CANCELLED": EventKind.CANCELLED,
    "BOOKING_REJECTED": EventKind.REJECTED,
    "BOOKING_NO_SHOW_UPDATED": EventKind.NO_SHOW,
    # Cal Video saw no guest join. AFTER_HOSTS_CAL_VIDEO_NO_SHOW stays unmapped (recorded as
    # ignored): a host who did not join is not a patient no-show (README "Cal.com triggers").
    "AFTER_GUESTS_CAL_VIDEO_NO_SHOW": EventKind.NO_SHOW,
    "MEETING_ENDED": EventKind.MEETING_ENDED,
}


UNKNOWN_SEQUENCE = -1  # the body carries no iCalSequence: the ledger's last one applies


class AckCode(StrEnum):
    AA = "AA"
    AE = "AE"
    AR = "AR"
    CA = "CA"
    CE = "CE"
    CR = "CR"


@dataclass(frozen=True)
class Person:
    name: str = ""
    email: str = ""
    first_name: str = ""
    last_name: str = ""
    phone: str = ""
    username: str = ""
    timezone: str = ""


@dataclass(frozen=True)
class AppointmentEvent:
    """One Cal.com booking change, normalised. Holds PHI: never log it or put it in a task."""

    event_id: str
    trigger: str
    kind: EventKind
    appointment_key: str  # the key the ledger knows for the booking, else its uid chain's root
    uid: str  # this booking version's Cal.com uid
    previous_uid: str | None  # rescheduleUid: the booking this one replaces
    booking_id: int | None
    sequence: int  # iCalSequence, or UNKNOWN_SEQUENCE
    created_at: datetime  # webhook createdAt (UTC)
    start: datetime | None  # UTC
    end: datetime | None  # UTC
    status: str  # Cal.com booking status (ACCEPTED, PENDING, CANCELLED, REJECTED)
    organizer: Person
    attendee: Person
    responses: dict[str, Any] = field(default_factory=dict)  # field slug -> value
    location: str = ""
    event_type_id: int | None = None
    event_type_slug: str = ""
    event_title: str = ""
    team: str = ""
    notes: str = ""
    cancellation_reason: str = ""
    no_show: bool | None = None
    synthetic: bool = False  # made by reconciliation, not by a webhook
    ical_uid: str = ""  # an attribute only: Cal.com leaves it out of some bodies
    recurring: bool = False  # one occurrence of a recurring series
    series_uid: str = ""  # recurringEventId, when the body names it

    @property
    def duration_minutes(self) -> int | None:
        if self.start is None or self.end is None:
            return None
        return int((self.end - self.start).total_seconds() // 60)

    def response(self, name: str) -> str:
        """A booking-form answer as text ("" when the field is unset or not text)."""
        value = self.responses.get(name) if name else None
        return value.strip() if isinstance(value, str) else ""

    def with_no_show(self, news: AppointmentEvent) -> AppointmentEvent:
        """A no-show body names a booking only: this booking event, carrying that news."""
        return dataclasses.replace(self, event_id=news.event_id, trigger=news.trigger,
                                   kind=news.kind, created_at=news.created_at,
                                   no_show=news.no_show)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for key in ("created_at", "start", "end"):
            value = getattr(self, key)
            data[key] = value.isoformat() if value else None
        data["kind"] = self.kind.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AppointmentEvent:
        values = dict(data)
        for key in ("created_at", "start", "end"):
            raw = values.get(key)
            values[key] = datetime.fromisoformat(raw) if raw else None
        values["kind"] = EventKind(values["kind"])
        values["organizer"] = Person(**values["organizer"])
        values["attendee"] = Person(**values["attendee"])
        return cls(**values)


@dataclass(frozen=True)
class DeliveryResult:
    """What a transport returns. Transports never decide retry vs dead letter: the worker does."""

    ok: bool
    transient: bool = False
    detail: str = ""  # no PHI: codes, ids and error classes only
    ack_code: str | None = None
    status_code: int | None = None
    retry_after: float | None = None
    remote_id: str | None = None
    response_excerpt: str = ""  # may hold PHI (ERR text echoes fields): stored encrypted only
    notes: tuple[str, ...] = ()  # protocol notes for the attempt record (ids and codes only)
