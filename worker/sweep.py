"""The beat sweep: wake due queues, expire order waits, rescue work a dead worker left behind."""

from __future__ import annotations

import logging

from core import clock
from core.runtime import Runtime
from worker import pipeline

log = logging.getLogger(__name__)


def sweep(rt: Runtime) -> dict:
    """Beat: wake due queues, expire order waits, and rescue work a dead worker left behind."""
    now = clock.now()
    woke = expired = rescued = resent = 0
    # first: events parked on a uid that is known now (their wake-up was lost), so that none
    # of them expires below as "predecessor missing"
    for uid in rt.ledger.known_parked_uids():
        for event_id in rt.ledger.wake([uid], rt.store.keys.unprocessed, repr(now)):
            rt.reprocess(event_id, False)
            woke += 1
    for item in rt.ledger.pop_due(now):
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
    stale_after = rt.settings.delivery.stuck_event_seconds
    members = list(rt.redis.sscan_iter(rt.ledger.pending_index, count=500))
    for start in range(0, len(members), 500):  # one round trip per 500 queues, not three each
        batch = [m.decode().rpartition("|") for m in members[start:start + 500]]
        pipe = rt.redis.pipeline(transaction=False)
        for key, _, target in batch:
            pipe.exists(rt.ledger.lock_name(f"drain:{key}|{target}"))
            pipe.zrange(rt.ledger.pending(key, target), 0, 0)
            pipe.zscore(rt.ledger.due, f"drain:{key}|{target}")
        answers = pipe.execute()
        for i, (key, _, target) in enumerate(batch):
            locked, heads, due = answers[3 * i:3 * i + 3]
            if locked:
                continue
            if not heads:
                rt.redis.srem(rt.ledger.pending_index, f"{key}|{target}")
                continue
            if due is not None and float(due) > now:
                continue
            head = heads[0].decode()
            d = rt.ledger.get_delivery(head)
            if d is None or now - d.updated_at >= stale_after:
                if d:
                    rt.ledger.update_delivery(head, rescued_at=repr(now))
                rt.kick(key, target, None)
                rescued += 1
    for dl_id in rt.redis.smembers(rt.ledger.to_resolve):  # delivered, the worker died before
        from worker.delivery import resolve_delivered

        resolve_delivered(rt, dl_id.decode())
    for event_id in rt.store.stuck(stale_after):
        rt.redis.zadd(rt.store.keys.unprocessed, {event_id: now})  # not again for a while
        reason = rt.redis.hget(rt.store.keys.event(event_id), "reason")
        rt.reprocess(event_id, reason == b"replayed:force")  # a forced replay stays forced
        resent += 1
    if rt.settings.calcom.api_key:  # EHR-side changes the MLLP listener or FHIR inbound queued
        from worker.ehr_changes import OwnAppointments

        OwnAppointments(rt.settings, rt.redis, rt.ledger.cipher).run_pending(now)
    purged = {}
    if rt.redis.set(f"{rt.settings.key_prefix}:retention:ran", "1", nx=True,
                    ex=max(1, int(rt.settings.retention.run_interval_seconds))):
        from worker.retention import purge

        purged = purge(rt, now)
    if woke or expired or rescued or resent:
        log.info("sweep woke=%d expired=%d rescued=%d resent=%d", woke, expired, rescued, resent)
    return {"woke": woke, "expired": expired, "rescued": rescued, "resent": resent, **purged}
