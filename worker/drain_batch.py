"""The first delivery of many queues at once: a batch's new deliveries (worker/batch.py).

One round trip takes every queue's drain lock and reads its head and the circuits; one reads the
deliveries and what their targets hold; one MULTI starts every attempt; the messages go out one
after the other on the target's connection; one MULTI commits every delivered one; one round
trip releases the locks. A queue that needs more (its circuit not closed, a head not due yet, a
skip, more queued behind) is then drained the usual way (`delivery.drain`). A target's first
transient failure stops the batch's sends to it: its other queues get drain tasks of their own,
as they would have without the batch.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from core import clock
from core.deliveries import Delivery
from core.errors import MappingError
from core.faults import crash_point
from core.replication import confirm
from core.retry import CircuitBreaker
from core.runtime import Runtime
from worker.delivery import (
    DELIVERED_ANSWERS,
    RENEW_HEAD,
    STATE_READS,
    Prepared,
    after_delivered,
    drain,
    mapping_failed,
    prepare,
    queue_delivered,
    queue_start,
    queue_state_read,
    record_failure,
    send_attempt,
)
from worker.events import Loaded, load_events


@dataclass
class Queue:
    key: str
    target: str
    known: dict[str, Loaded]
    lock: str = ""
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    head: str | None = None


def drain_many(rt: Runtime, items: list[tuple[str, str, dict[str, Loaded]]]) -> None:
    """Deliver the head of each (appointment key, target) queue; `known`: events loaded already."""
    queues = [Queue(key, target, known, rt.ledger.lock_name(f"drain:{key}|{target}"))
              for key, target, known in items]
    held = _lock(rt, queues)
    locked_at = clock.now()
    again: list[Queue] = []  # drained the usual way afterwards
    kicked: list[Queue] = []  # a drain task each
    check: list[Queue] = []  # a head may have come in behind ours: look again once released
    try:
        if held:
            confirm(rt.redis, rt.settings.redis, rt.settings.key_prefix)  # locks a failover keeps
        ready = _ready(rt, held, again, check)
        sent = _send(rt, ready, again, kicked, locked_at)
        _commit(rt, sent)
        check += [q for q, *_ in sent]
    finally:
        _release(rt, held)
    if check:
        pipe = rt.redis.pipeline(transaction=False)
        for q in check:
            pipe.zrange(rt.ledger.pending(q.key, q.target), 0, 0)
        again += [q for q, head in zip(check, pipe.execute(), strict=True) if head]
    for q in again:
        drain(rt, q.key, q.target, q.known)
    for q in kicked:
        rt.kick(q.key, q.target, None)


def _lock(rt: Runtime, queues: list[Queue]) -> list[Queue]:
    """The drain locks, the queues' heads and the circuits in one round trip. A queue whose
    lock another drain holds is left to it (it looks again after releasing)."""
    ttl_ms = int(rt.settings.delivery.lock_ttl_seconds * 1000)
    targets = sorted({q.target for q in queues})
    pipe = rt.redis.pipeline(transaction=False)
    for q in queues:
        pipe.set(q.lock, q.token, nx=True, px=ttl_ms)
        pipe.zrange(rt.ledger.pending(q.key, q.target), 0, 0)
    for target in targets:
        rt.breaker.queue_state(pipe, target)
    answers = pipe.execute()
    closed = {t for i, t in enumerate(targets)
              if CircuitBreaker.state_from(answers[2 * len(queues) + i]).state == "closed"}
    held = []
    for i, q in enumerate(queues):
        if answers[2 * i]:
            head = answers[2 * i + 1]
            q.head = head[0].decode() if head and q.target in closed else None
            held.append(q)
    return held


def _ready(rt: Runtime, held: list[Queue], again: list[Queue],
           check: list[Queue]) -> list[tuple[Queue, Delivery, Prepared, int]]:
    """Read the heads and their targets' state, check them, start their attempts (one round
    trip and one MULTI). Returns what is ready to send, with its attempt number."""
    heads = [q for q in held if q.head]
    again += [q for q in held if not q.head]  # empty, or its circuit is not closed: the usual
    # drain decides (an empty queue it finds empty at once)
    if not heads:
        return []
    pipe = rt.redis.pipeline(transaction=False)
    for q in heads:
        rt.ledger.queue_delivery_read(pipe, q.head)
        queue_state_read(rt, pipe, q.key, q.target)
    answers, step = pipe.execute(), 2 + STATE_READS
    now = clock.now()
    found = []
    for i, q in enumerate(heads):
        data, attempts, *state = answers[i * step:(i + 1) * step]
        d = Delivery.from_record(q.head, data, attempts)
        if d is None or d.next_attempt_at > now:
            again.append(q)
        else:
            found.append((q, d, state))
    known = {k: v for q, _, _ in found for k, v in q.known.items()}
    known |= load_events(rt, [d.event_id for _, d, _ in found if d.event_id not in known])
    prepared: list[tuple[Queue, Delivery, Prepared]] = []
    for q, d, state in found:
        prep = prepare(rt, d, known, state)
        if isinstance(prep, str):  # skipped or dead-lettered: the queue goes on
            check.append(q)
            continue
        prepared.append((q, d, prep))
    if not prepared:
        return []
    pipe = rt.redis.pipeline(transaction=True)
    at = [queue_start(rt, pipe, d, prep) for _, d, prep in prepared]
    answers = pipe.execute()
    return [(q, d, prep, int(answers[i])) for (q, d, prep), i in zip(prepared, at, strict=True)]


Sent = tuple[Queue, Delivery, Prepared, dict[str, Any], bytes | None, Any]


def _send(rt: Runtime, ready: list[tuple[Queue, Delivery, Prepared, int]], again: list[Queue],
          kicked: list[Queue], locked_at: float) -> list[Sent]:
    failing: set[str] = set()
    sent: list[Sent] = []
    for q, d, prep, attempt in ready:
        if q.target in failing:  # not sent after all: the attempt is taken back
            rt.ledger.unstart_attempt(d.id)
            kicked.append(q)
            continue
        if not _still_ours(rt, q, d, renew=clock.now() - locked_at > _renew_after(rt)):
            kicked.append(q)  # its lock expired or went with a failover: whoever holds it now
            continue  # sends it (a kick in case nobody does); its record is theirs to change
        try:
            result, wire, entry = send_attempt(rt, d, prep, attempt)
        except MappingError as exc:
            mapping_failed(rt, d, prep, exc)
            again.append(q)
            continue
        if result.ok:
            crash_point("after_send_before_commit")
            sent.append((q, d, prep, entry, wire, result))
        elif record_failure(rt, d, prep, attempt, result, wire, entry) == "retry":
            failing.add(q.target)  # scheduled (and kicked) by record_failure
        else:
            again.append(q)  # dead-lettered: the queue goes on
    return sent


def _renew_after(rt: Runtime) -> float:
    return rt.settings.delivery.lock_ttl_seconds / 3


def _still_ours(rt: Runtime, q: Queue, d: Delivery, renew: bool) -> bool:
    """Is the queue's lock still ours, and `d` still its head? Before each send, as the single
    drain checks after each one. A read while the batch is young; later the lock is renewed."""
    pending = rt.ledger.pending(q.key, q.target)
    if renew:
        ttl_ms = int(rt.settings.delivery.lock_ttl_seconds * 1000)
        ours, *head = rt.redis.eval(RENEW_HEAD, 2, q.lock, pending, q.token, ttl_ms)
    else:
        pipe = rt.redis.pipeline(transaction=False)
        pipe.get(q.lock)
        pipe.zrange(pending, 0, 0)
        holder, head = pipe.execute()
        ours = holder == q.token.encode()
    return bool(ours) and bool(head) and head[0].decode() == d.id


def _commit(rt: Runtime, sent: list[Sent]) -> None:
    """Every delivered message of the batch in one MULTI, then its follow-ups."""
    if not sent:
        return
    pipe = rt.redis.pipeline(transaction=True)
    at = [queue_delivered(rt, pipe, d, prep, entry, wire, result)
          for _, d, prep, entry, wire, result in sent]
    answers = pipe.execute()
    confirm(rt.redis, rt.settings.redis, rt.settings.key_prefix)  # else the task retries
    for (_, d, *_), i in zip(sent, at, strict=True):
        after_delivered(rt, d, answers[i:i + DELIVERED_ANSWERS])


def _release(rt: Runtime, held: list[Queue]) -> None:
    """Release the locks (each hands a woken queue over to the next waiting one)."""
    if not held:
        return
    pipe = rt.redis.pipeline(transaction=False)
    for q in held:
        rt.ledger.waiters.queue_release(pipe, q.lock, q.token, q.key, q.target, clock.now())
    following: dict[str, list[str]] = {}
    for q, claimed in zip(held, pipe.execute(), strict=True):
        if claimed:
            following.setdefault(q.target, []).append(claimed.decode())
    for target, keys in following.items():
        rt.kick_all(keys, target)
