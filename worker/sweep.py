"""The beat sweep: wake due queues, expire order waits, rescue work a dead worker left behind.

Bounded: each part handles at most `delivery.sweep_batch` items per tick and the scans continue
from a cursor kept in Redis on the next tick, so a tick costs the same with 10 or 100,000
queues pending. Every step is safe to repeat (two sweeps at once only kick twice).
"""

from __future__ import annotations

import logging

from core import clock
from core.faults import crash_point
from core.runtime import Runtime
from worker import pipeline

log = logging.getLogger(__name__)


CHUNK = 100  # items popped or read at a time, so that a sweep out of time leaves the rest


def sweep(rt: Runtime) -> dict:
    """Beat: wake due queues, expire order waits, and rescue work a dead worker left behind."""
    now = started = clock.now()
    d, w = rt.settings.delivery, rt.settings.worker
    batch = max(1, d.sweep_batch)
    # every kick is a broker write (fsync'd): a time budget too, well inside the sweep lock
    deadline = started + max(1.0, min(w.task_soft_time_limit / 4,
                                      max(5.0, 2 * d.sweep_interval_seconds) / 2))
    woke = expired = rescued = resent = popped = 0
    parts: dict[str, float] = {}

    def lap(name: str) -> None:
        parts[name] = round(clock.now() - started - sum(parts.values()), 3)

    # first: events parked on a uid that is known now (their wake-up was lost), so that none
    # of them expires below as "predecessor missing"
    for uid in rt.ledger.known_parked_uids(batch):
        if clock.now() > deadline:
            break
        for event_id in rt.ledger.wake([uid], rt.store.keys.unprocessed, repr(now)):
            rt.reprocess(event_id, False)
            woke += 1
    lap("parked")
    while popped < batch and clock.now() < deadline:
        due = rt.ledger.pop_due(now, min(CHUNK, batch - popped))
        popped += len(due)
        for item in due:
            kind, _, rest = item.partition(":")
            if kind == "drain":
                key, _, target = rest.rpartition("|")
                rt.kick(key, target, None)
                woke += 1
            elif kind == "wait" and pipeline.expire_wait(rt, rest):
                expired += 1
            elif kind == "series":
                from worker.series import retry

                retry(rt, rest)
        if len(due) < CHUNK:
            break
    lap("due")
    crash_point("sweep_mid")
    circuits = _circuits(rt, now, batch)
    lap("circuits")
    scanned, kicked = _scan_pending(rt, now, batch, deadline)
    rescued += kicked
    lap("pending")
    to_resolve = rt.redis.srandmember(rt.ledger.to_resolve, min(CHUNK, batch)) or []
    for dl_id in to_resolve:  # delivered, the worker died before
        from worker.delivery import resolve_delivered

        resolve_delivered(rt, dl_id.decode())
    lap("resolve")
    while resent < batch and clock.now() < deadline:
        stuck = rt.store.stuck(d.stuck_event_seconds, min(CHUNK, batch - resent))
        if not stuck:
            break
        pipe = rt.redis.pipeline(transaction=False)
        pipe.zadd(rt.store.keys.unprocessed, dict.fromkeys(stuck, now))  # not again for a while
        for event_id in stuck:
            pipe.hget(rt.store.keys.event(event_id), "reason")
        for event_id, reason in zip(stuck, pipe.execute()[1:], strict=True):
            rt.reprocess(event_id, reason == b"replayed:force")  # a forced replay stays forced
        resent += len(stuck)
    lap("stuck")
    if rt.settings.calcom.api_key:  # EHR-side changes the MLLP listener or FHIR inbound queued
        from worker.ehr_changes import OwnAppointments

        # each one is a call to Cal.com: a few per tick, the rest on the next ticks
        OwnAppointments(rt.settings, rt.redis, rt.ledger.cipher).run_pending(now, limit=10)
    lap("ehr_changes")
    purged = {}
    p = rt.settings.key_prefix
    if rt.redis.exists(f"{p}:retention:cursor") or rt.redis.set(
            f"{p}:retention:ran", "1", nx=True,
            ex=max(1, int(rt.settings.retention.run_interval_seconds))):
        from worker.retention import purge

        purged = purge(rt, now, limit=batch)  # a pass in slices: the cursor stays in Redis
    lap("retention")
    took = round(clock.now() - started, 3)
    stats = {"woke": woke, "expired": expired, "rescued": rescued, "resent": resent,
             "due": popped, "scanned": scanned, **circuits, "seconds": took,
             "slowest": max(parts, key=parts.__getitem__), "slowest_seconds": max(parts.values())}
    rt.redis.hset(f"{p}:sweep:last", mapping={"at": repr(now), **stats})  # for tests, operators
    if woke or expired or rescued or resent or circuits["circuit_woken"]:
        log.info("sweep woke=%d expired=%d rescued=%d resent=%d circuit_woken=%d scanned=%d "
                 "in %.3fs (slowest: %s)", woke, expired, rescued, resent,
                 circuits["circuit_woken"], scanned, took, stats["slowest"])
    return {**stats, **purged}


def _circuits(rt: Runtime, now: float, batch: int) -> dict[str, int]:
    """Per target: a probe while half-open; once closed, keep WAKE_IN_FLIGHT queues woken and
    re-kick claims that no drain finished (see core/waiters.py)."""
    from worker.delivery import WAKE_IN_FLIGHT

    waiters = rt.ledger.waiters
    woken = waiting = 0
    for target in (t.name for t in rt.settings.targets):
        queued, in_flight = waiters.counts(target)
        waiting += queued
        if not queued and not in_flight:
            continue
        keys = waiters.stale_claims(target, now - rt.settings.delivery.stuck_event_seconds,
                                    batch, now)
        state = rt.breaker.state(target).state
        if state == "half-open" and not rt.redis.exists(f"{waiters.circuit(target)}:probe"):
            keys += waiters.claim(target, 1, now, probe=True)
        elif state == "closed":
            keys += waiters.claim(target, min(batch, WAKE_IN_FLIGHT - in_flight), now)
        rt.kick_all(keys, target)
        woken += len(keys)
    return {"circuit_woken": woken, "circuit_waiting": waiting}


def _scan_pending(rt: Runtime, now: float, batch: int, deadline: float) -> tuple[int, int]:
    """Re-kick queues whose drain died (lock gone, head untouched for `stuck_event_seconds`):
    at most `batch` queues a tick, from a cursor that the next tick continues."""
    ledger = rt.ledger
    cursor_key = f"{rt.settings.key_prefix}:sweep:pending-cursor"
    cursor = int(rt.redis.get(cursor_key) or 0)
    members: list[str] = []
    for _ in range(10):  # SSCAN's COUNT is a hint: a few calls at most
        cursor, found = rt.redis.sscan(ledger.pending_index, cursor, count=batch)
        members += [m.decode() for m in found]
        if cursor == 0 or len(members) >= batch:
            break
    rt.redis.set(cursor_key, cursor)
    stale_before = now - rt.settings.delivery.stuck_event_seconds
    queues = [m.rpartition("|") for m in members]
    pipe = rt.redis.pipeline(transaction=False)
    for key, _, target in queues:
        pipe.exists(ledger.lock_name(f"drain:{key}|{target}"))
        pipe.zrange(ledger.pending(key, target), 0, 0)
        pipe.zscore(ledger.due, f"drain:{key}|{target}")
        pipe.zscore(ledger.waiters.waiters(target), key)
        pipe.zscore(ledger.waiters.waking(target), key)
    answers = pipe.execute()
    heads: list[tuple[str, str, str]] = []
    for i, (key, _, target) in enumerate(queues):
        locked, head, due, waiting, waking = answers[5 * i:5 * i + 5]
        if not head:
            rt.redis.srem(ledger.pending_index, f"{key}|{target}")
        elif not (locked or waiting is not None or waking is not None
                  or (due is not None and float(due) > now)):
            heads.append((key, target, head[0].decode()))  # the circuit part wakes waiters
    pipe = rt.redis.pipeline(transaction=False)
    for _, _, head in heads:
        pipe.hget(ledger.delivery_key(head), "updated_at")
    kicked = 0
    for (key, target, head), updated in zip(heads, pipe.execute(), strict=True):
        if clock.now() > deadline:
            break  # out of time: the next pass over the index finds it again
        if updated is None or float(updated) <= stale_before:
            if updated is not None:
                ledger.update_delivery(head, rescued_at=repr(now))
            rt.kick(key, target, None)
            kicked += 1
    return len(queues), kicked
