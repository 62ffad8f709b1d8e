"""Which SIU event a Cal.com change becomes (DESIGN.md "Event mapping")."""

from __future__ import annotations

from core.models import AppointmentEvent, EventKind


def message_event_for(event: AppointmentEvent, uid_status: str | None) -> str | None:
    """`uid_status` is the kind last accepted for this booking uid (None if new)."""
    kind = event.kind
    if kind is EventKind.REQUESTED:
        return "S12"
    if kind is EventKind.CREATED:
        return "S14" if uid_status == EventKind.REQUESTED.value else "S12"
    if kind is EventKind.RESCHEDULED:
        return "S13"
    if kind in (EventKind.CANCELLED, EventKind.REJECTED):
        return "S15"
    if kind is EventKind.NO_SHOW:
        return "S26" if event.no_show else "S14"
    return None  # MEETING_ENDED: not sent by default


def filler_status_for(event: AppointmentEvent) -> str | None:
    if event.kind is EventKind.NO_SHOW and not event.no_show:
        return "Booked"  # no-show taken back
    return None
