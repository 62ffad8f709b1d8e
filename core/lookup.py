"""The configured provider, event type and location for a Cal.com event.

One place for the SIU and FHIR adapters and the worker. Names match caselessly (casefold).
"""

from __future__ import annotations

from core.config import EventTypeSettings, LocationSettings, ProviderSettings
from core.models import AppointmentEvent


def find_provider(providers: tuple[ProviderSettings, ...],
                  event: AppointmentEvent) -> ProviderSettings | None:
    """The provider whose `calcom_user` is the organizer's username or email."""
    who = {k.casefold() for k in (event.organizer.username, event.organizer.email) if k}
    return next((p for p in providers if p.calcom_user.casefold() in who), None)


def find_event_type(event_types: tuple[EventTypeSettings, ...],
                    event: AppointmentEvent) -> EventTypeSettings | None:
    for et in event_types:
        if (et.slug and et.slug == event.event_type_slug) or (
                et.id is not None and et.id == event.event_type_id):
            return et
    return None


def find_location(locations: tuple[LocationSettings, ...],
                  event: AppointmentEvent) -> LocationSettings | None:
    """The first location whose `match` is part of the event's location."""
    where = event.location.casefold()
    return next((loc for loc in locations if loc.match and loc.match.casefold() in where), None)
