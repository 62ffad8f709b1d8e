"""A stored event as the worker uses it: normalised, with when the bridge received it."""

from __future__ import annotations

from adapters.calcom.payload import normalise, parse_body
from core.models import AppointmentEvent
from core.runtime import Runtime

# an event as the worker uses it, and when the bridge received it
Loaded = tuple[AppointmentEvent, float]


def load_event(rt: Runtime, event_id: str) -> Loaded:
    stored = rt.store.get(event_id)
    if stored is None:
        raise KeyError(event_id)
    return normalise(event_id, parse_body(stored.body), rt.ledger.resolve), stored.received_at
