"""Many events in a few round trips: the way a batch task (worker/tasks.py) takes new events.

Each step is one pipeline for the whole batch: read the events, look up their booking uids,
take their appointments' locks, read their snapshots, write every accept in one MULTI, release
the locks, mark them followed up. The new deliveries then go out together
(worker/drain_batch.py). An event that needs more than the common case (a retry after a crash,
a missing predecessor, a possible echo, a second event for one appointment in this batch, a busy
lock, a body that fails) goes through `process_event` on its own afterwards, in arrival order:
the batch takes the short way only where it leads where the long way would.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from adapters.calcom import api as calcom_api
from core.faults import crash_point
from core.ledger import SNAPSHOT_READS, AppointmentSnapshot
from core.lookup import find_provider
from core.models import AppointmentEvent, EventKind
from core.replication import confirm
from core.runtime import Runtime
from core.store import StoredEvent
from worker.accept_plan import Plan, decide, log_plan, missing_predecessor, queue_plan
from worker.drain_batch import drain_many
from worker.events import Loaded, normalise_many, read_events
from worker.pipeline import follow_up

log = logging.getLogger(__name__)

# KEYS: locks; ARGV: their tokens. Releases each lock still held with its token (0 = expired
# or taken meanwhile). One script for the batch instead of one per lock.
_UNLOCK = """
local released = 0
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[i] then
    redis.call('DEL', KEYS[i])
    released = released + 1
  end
end
return released
"""


@dataclass
class Taken:
    """One event of the batch on the short way."""

    stored: StoredEvent
    event: AppointmentEvent
    lock: str = ""
    token: str = ""
    snap: AppointmentSnapshot | None = None
    dead_letter: bool = False  # it has an event-level dead letter (a replay): follow up fully
    plan: Plan | None = None
    woken: list[str] = field(default_factory=list)

    @property
    def event_id(self) -> str:
        return self.stored.event_id


def process_batch(rt: Runtime, event_ids: list[str], one: Callable[[str], str]) -> Counter[str]:
    """Process `event_ids` (arrival order); `one(event_id)` runs an event the long way and
    returns its outcome. Returns the outcomes counted."""
    outcomes: Counter[str] = Counter()
    taken, slow = _load(rt, event_ids)
    taken, busy = _lock(rt, taken)
    slow |= busy
    try:
        if taken:
            confirm(rt.redis, rt.settings.redis, rt.settings.key_prefix)  # locks a failover keeps
        _snapshot(rt, taken)
        decided = [t for t in taken if _plan(rt, t)]
        slow |= {t.event_id for t in taken if t.plan is None}
        _commit(rt, decided)
    finally:
        _unlock(rt, taken)
    for t in decided:
        for waiting_id in t.woken:  # woken in the MULTI; the sweep re-sends them otherwise
            rt.reprocess(waiting_id, False)
    _follow_up(rt, decided)
    drains: list[tuple[str, str, dict[str, Loaded]]] = []
    for t in decided:
        outcomes[t.plan.state] += 1
        if t.plan.state == "accepted" and len(t.plan.targets) == 1:
            drains.append((t.event.appointment_key, t.plan.targets[0],
                           {t.event_id: (t.event, t.stored.received_at)}))
        elif t.plan.state == "accepted":  # several targets: one drain task each
            for target in t.plan.targets:
                rt.kick(t.event.appointment_key, target, None)
    if drains:
        drain_many(rt, drains)
    for event_id in event_ids:
        if event_id in slow:
            outcomes[one(event_id)] += 1
    return outcomes


def _load(rt: Runtime, event_ids: list[str]) -> tuple[list[Taken], set[str]]:
    """Read and normalise the events (two round trips). Returns those on the short way, and the
    ids for the long one."""
    found = read_events(rt, event_ids)
    stored = [s for s in found.values() if s is not None]
    slow = {event_id for event_id, s in found.items() if s is None}  # the long way says why
    events = normalise_many(rt, stored)
    blocker = calcom_api.BlockerType.from_settings(rt.settings.calcom)
    api_provider = any(p.strategy == "api" for p in rt.settings.providers)
    taken, keys = [], set()
    for s in stored:
        event = events[s.event_id]
        if not isinstance(event, AppointmentEvent):  # a bad body: dead-lettered the long way
            slow.add(s.event_id)
            continue
        # not new (a retry, a woken wait), a possible echo of an EHR block, or a second event
        # for one appointment: the long way, and the appointment's later events in the batch too
        if s.state != "received" or blocker.matches(event) or api_provider \
                or event.appointment_key in keys:
            slow.add(s.event_id)
        else:
            taken.append(Taken(s, event))
        keys.add(event.appointment_key)
    return taken, slow


def _lock(rt: Runtime, taken: list[Taken]) -> tuple[list[Taken], set[str]]:
    """Each event's appointment lock (the one process_event takes), in one round trip."""
    if not taken:
        return [], set()
    hold_ms = int(rt.settings.delivery.appointment_lock_seconds * 1000)
    pipe = rt.redis.pipeline(transaction=False)
    for t in taken:
        t.lock = rt.ledger.lock_name(f"appt:{t.event.appointment_key}")
        t.token = uuid.uuid4().hex
        pipe.set(t.lock, t.token, nx=True, px=hold_ms)
    answers = pipe.execute()
    held = [t for t, ok in zip(taken, answers, strict=True) if ok]
    return held, {t.event_id for t, ok in zip(taken, answers, strict=True) if not ok}


def _unlock(rt: Runtime, taken: list[Taken]) -> None:
    if taken:
        rt.redis.eval(_UNLOCK, len(taken), *(t.lock for t in taken), *(t.token for t in taken))


def _snapshot(rt: Runtime, taken: list[Taken]) -> None:
    """Save each normalised view, reserve an order number and read the appointment: one round
    trip for the batch."""
    pipe = rt.redis.pipeline(transaction=False)
    at = []
    for t in taken:
        rt.store.save_normalised(t.event_id, t.event.to_dict(), pipe)
        at.append(len(pipe))
        rt.ledger.queue_snapshot(pipe, t.event.appointment_key, t.event_id)
        pipe.exists(rt.deadletters.event_index(t.event_id))
    answers = pipe.execute()
    for t, i in zip(taken, at, strict=True):
        t.snap = rt.ledger.snapshot_from(answers[i:i + SNAPSHOT_READS])
        t.dead_letter = bool(answers[i + SNAPSHOT_READS])


def _plan(rt: Runtime, t: Taken) -> bool:
    """Decide; False sends the event the long way (a retry, or a predecessor not known)."""
    if t.snap is None or t.snap.accepted_order is not None \
            or missing_predecessor(t.event, t.snap, False):
        return False
    t.plan = decide(rt, t.event, t.snap, False)
    return True


def _commit(rt: Runtime, decided: list[Taken]) -> None:
    """Every accept of the batch, and the conflict index, in one MULTI."""
    if not decided:
        return
    pipe = rt.redis.pipeline(transaction=True)
    woken_at, track_at = [], []
    for t in decided:
        woken_at.append(queue_plan(rt, pipe, t.event, t.plan, False))
        provider = find_provider(rt.settings.providers, t.event)
        tracked = provider is not None and t.plan.state in ("accepted", "unrouted")
        track_at.append((provider, rt.conflicts.queue_track(pipe, provider, t.event))
                        if tracked else (None, None))
    answers = pipe.execute()
    crash_point("after_commit_before_unpark")
    for t, at, (provider, track) in zip(decided, woken_at, track_at, strict=True):
        t.woken = [w.decode() for w in answers[at] or []] if at is not None else []
        log_plan(t.event, t.plan)
        if track is not None:  # under the lock, as process_event does
            rt.conflicts.after_track(provider, t.event, answers[track])


def _follow_up(rt: Runtime, decided: list[Taken]) -> None:
    """What process_event's follow-up does; for most events only leaving the unprocessed set,
    for all of them in one command."""
    done = []
    for t in decided:
        cancel = t.plan.state in ("accepted", "unrouted") and t.event.kind is EventKind.CANCELLED \
            and t.stored.source != "reconciliation"
        if t.dead_letter or cancel:
            follow_up(rt, t.event_id, t.plan.state, t.event, t.stored.source)
        else:
            done.append(t.event_id)
    if done:
        rt.redis.zrem(rt.store.keys.unprocessed, *done)
