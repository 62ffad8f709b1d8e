"""Which SIU event a Cal.com change becomes (DESIGN.md "Event mapping")."""

from __future__ import annotations

from core.config import Settings
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
    if kind is EventKind.MEETING_ENDED:
        return "S14"  # SCH-25 Complete; only to targets with send_meeting_ended
    return None


def opted_in(event: AppointmentEvent, targets: list[str], settings: Settings) -> list[str]:
    """The routed targets that take this kind of event (MEETING_ENDED is opt-in per target)."""
    if event.kind is not EventKind.MEETING_ENDED:
        return targets
    return [t for t in targets if settings.target(t).send_meeting_ended]


def filler_status_for(event: AppointmentEvent) -> str | None:
    if event.kind is EventKind.NO_SHOW and not event.no_show:
        return "Booked"  # no-show taken back
    return None
