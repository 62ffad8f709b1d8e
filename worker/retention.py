"""Retention: delete patient data nobody needs any more (data minimisation), keep the facts.

Event bodies go once the event is final and older than the period; the event record keeps its
ids, state and times, and the body hash still drops a late duplicate. Closed dead letters go
after their period. Open dead letters and events still in flight are never touched.
"""

from __future__ import annotations

import logging

from core import clock
from core.ehr_echo import EhrEchoLedger
from core.runtime import Runtime

log = logging.getLogger(__name__)

FINAL = {b"done", b"skipped", b"unrouted", b"ignored", b"dead"}
SCAN_LIMIT = 50_000  # events looked at per call; the next call continues


def purge(rt: Runtime, now: float | None = None, limit: int = SCAN_LIMIT) -> dict[str, int]:
    """One slice of a pass over the events: at most `limit` looked at, the SCAN cursor kept in
    Redis for the next call. The rest (dead letters, conflicts, fillers, audit) ends a pass."""
    now = now or clock.now()
    cfg = rt.settings.retention
    body_cutoff = now - cfg.event_body_days * 86400
    cursor_key = f"{rt.settings.key_prefix}:retention:cursor"
    cursor = int(rt.redis.get(cursor_key) or 0)
    bodies = 0
    count = max(1, min(1000, limit))
    for _ in range(max(1, limit // count)):  # SCAN's work is per call, matches or not
        cursor, keys = rt.redis.scan(cursor, match=rt.store.keys.event("*"), count=count)
        pipe = rt.redis.pipeline(transaction=False)
        for key in keys:
            pipe.hmget(key, "state", "received_at", "body")
        for key, (state, received, has_body) in zip(keys, pipe.execute(), strict=True):
            if has_body is None or state not in FINAL or float(received or now) > body_cutoff:
                continue
            if _dead_letter_open(rt, key.decode().rsplit(":", 1)[-1]):
                continue
            event_id = key.decode().rsplit(":", 1)[-1]
            rt.redis.hdel(key, "body", "normalised")
            rt.redis.hset(key, "body_deleted_at", repr(now))
            for delivery_id in rt.ledger.deliveries_for_event(event_id):
                rt.redis.hdel(rt.ledger.delivery_key(delivery_id), "wire", "response", "override")
            bodies += 1
        if cursor == 0:
            break
    if cursor:
        rt.redis.set(cursor_key, cursor)
        return {"event_bodies": bodies, "dead_letters": 0}
    rt.redis.delete(cursor_key)
    letters = _purge_dead_letters(rt, now - cfg.closed_dead_letter_days * 86400)
    rt.conflicts.purge_ended(rt.settings.providers, now)
    echoes = EhrEchoLedger(rt.redis, rt.settings.key_prefix)
    for target in rt.settings.targets:  # filler ids of appointments long gone
        echoes.prune_fillers(target.name, now=now)
    rt.audit.trim(cfg.audit_days * 86400, cfg.audit_entries, now)
    if bodies or letters:
        rt.audit.record("system", "retention.purge", "retention", event_bodies=bodies,
                        dead_letters=letters)
        log.info("retention removed %d event bodies and %d closed dead letters", bodies, letters)
    return {"event_bodies": bodies, "dead_letters": letters}


def _dead_letter_open(rt: Runtime, event_id: str) -> bool:
    """A person may still need this event's data to fix and replay it."""
    letters = [rt.deadletters.for_event(event_id)] + [
        rt.deadletters.for_delivery(d) for d in rt.ledger.deliveries_for_event(event_id)]
    return any(dl is not None and dl.state in ("open", "replayed") for dl in letters)


def _purge_dead_letters(rt: Runtime, cutoff: float) -> int:
    removed = 0
    p = rt.deadletters.p
    for state in ("resolved", "discarded"):
        for raw_id in rt.redis.smembers(f"{p}:state:{state}"):
            dl_id = raw_id.decode()
            updated = rt.redis.hget(f"{p}:{dl_id}", "updated_at")
            if updated is None or float(updated) > cutoff:
                continue
            d = rt.deadletters.get(dl_id)
            if d is None:  # its record is gone already: only the state entry is left
                rt.redis.srem(f"{p}:state:{state}", dl_id)
                rt.redis.zrem(f"{p}:all", dl_id)
            else:
                rt.deadletters.delete(d)
            removed += 1
    return removed
