"""A stored event as the worker uses it: normalised, with when the bridge received it."""

from __future__ import annotations

from adapters.calcom.payload import normalise, parse_body
from core.models import AppointmentEvent
from core.runtime import Runtime
from core.store import StoredEvent

# an event as the worker uses it, and when the bridge received it
Loaded = tuple[AppointmentEvent, float]


def load_event(rt: Runtime, event_id: str) -> Loaded:
    stored = rt.store.get(event_id)
    if stored is None:
        raise KeyError(event_id)
    return normalise(event_id, parse_body(stored.body), rt.ledger.resolve), stored.received_at


def normalise_many(rt: Runtime, stored: list[StoredEvent]) -> dict[str, AppointmentEvent | Exception]:
    """Normalise several events with one lookup of all their booking uids (MGET) instead of one
    per uid. An event that cannot be parsed or normalised maps to its exception."""
    parsed, out = {}, {}
    for s in stored:
        try:
            body = parse_body(s.body)
            asked: set[str] = set()
            normalise(s.event_id, body, lambda uid, asked=asked: asked.add(uid))  # which uids
            parsed[s.event_id] = (body, asked)
        except Exception as exc:  # noqa: BLE001 - the caller decides what a bad body means
            out[s.event_id] = exc
    uids = sorted({uid for _, asked in parsed.values() for uid in asked})
    found = rt.redis.mget([rt.ledger.uid_key(u) for u in uids]) if uids else []
    known = {uid: value.decode() for uid, value in zip(uids, found, strict=True) if value}
    for event_id, (body, _) in parsed.items():
        try:
            out[event_id] = normalise(event_id, body, known.get)
        except Exception as exc:  # noqa: BLE001
            out[event_id] = exc
    return out


def read_events(rt: Runtime, event_ids: list[str]) -> dict[str, StoredEvent | None]:
    """Several stored events in one round trip; None for one missing or unreadable (the long
    way, `process_event` or `load_event`, reads it again and handles why)."""
    pipe = rt.redis.pipeline(transaction=False)
    for event_id in event_ids:
        pipe.hgetall(rt.store.keys.event(event_id))
    found: dict[str, StoredEvent | None] = {}
    for event_id, data in zip(event_ids, pipe.execute(), strict=True):
        try:
            found[event_id] = rt.store.decode(event_id, data)
        except Exception:  # noqa: BLE001 - see above
            found[event_id] = None
    return found


def load_events(rt: Runtime, event_ids: list[str]) -> dict[str, Loaded]:
    """Several events in one round trip (and one for their uids); those that cannot be read or
    normalised are left out (load_event raises for them)."""
    if not event_ids:
        return {}
    stored = [s for s in read_events(rt, event_ids).values() if s is not None]
    events = normalise_many(rt, stored)
    return {s.event_id: (e, s.received_at) for s in stored
            if isinstance(e := events[s.event_id], AppointmentEvent)}
