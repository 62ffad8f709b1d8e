"""Which targets an event goes to: `[[routes]]` match on event type, team and location."""

from __future__ import annotations

from core.config import RouteSettings, Settings
from core.models import AppointmentEvent


def _matches(route: RouteSettings, event: AppointmentEvent) -> bool:
    if route.event_types and not (
        event.event_type_slug in route.event_types
        or (event.event_type_id is not None and str(event.event_type_id) in route.event_types)
    ):
        return False
    if route.teams and event.team not in route.teams:
        return False
    return not (route.locations and not any(m in event.location for m in route.locations))


def route(event: AppointmentEvent, settings: Settings) -> list[str]:
    """Target names in config order, each once. Empty = unrouted (recorded, not dropped)."""
    names: list[str] = []
    for r in settings.routes:
        if _matches(r, event):
            names += [t for t in r.targets if t not in names]
    return names
