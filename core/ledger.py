"""The appointment ledger (Redis): identity, dedupe, order and delivery records.

Per appointment key (see adapters/calcom/payload.appointment_key):
- the uid chain, the last accepted (sequence, createdAt), logical-duplicate marks;
- per target: the last applied order, status, message event, EHR id and control ids;
- per target: an ordered queue of pending deliveries (a sorted set scored by accept order).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

from core import clock
from core.crypto import Cipher
from core.deliveries import Delivery
from core.ledger_records import DeliveryRecords
from core.ledger_scripts import DEQUEUE, PROGRESS, REQUEUE, WAKE
from core.redis_client import queue_script
from core.waiters import CircuitWaiters

SNAPSHOT_READS = 6  # answers a queued snapshot adds to its pipeline
COMMIT_ANSWERS = 2  # answers from the first one `queue_commit` names


@dataclass(frozen=True)
class AppointmentSnapshot:
    accepted_order: int | None  # set when this event was accepted before (a retry)
    next_order: int  # reserved for this event if it is accepted now
    appointment: dict[str, str]
    uids: set[str]
    uid_statuses: dict[str, str]
    seen: dict[str, str] = field(default_factory=dict)  # logical-duplicate mark -> event id


@dataclass(frozen=True)
class Committed:
    """What a committed delivery (`queue_commit`) left behind, for the follow-up steps."""

    event_open_deliveries: int
    dead_letter_id: str | None


class Ledger(DeliveryRecords):
    def __init__(self, client: redis.Redis, cipher: Cipher, prefix: str = "calehr") -> None:
        self.r = client
        self.cipher = cipher
        self.p = prefix
        self._wake = client.register_script(WAKE)
        self._progress = client.register_script(PROGRESS)
        self._requeue = client.register_script(REQUEUE)
        self._dequeue = client.register_script(DEQUEUE)
        self._init_records()
        self.waiters = CircuitWaiters(client, prefix)

    # keys ---------------------------------------------------------------------------------
    def appt(self, key: str) -> str:
        return f"{self.p}:appt:{key}"

    def uid_key(self, uid: str) -> str:
        return f"{self.p}:uid:{uid}"

    def pending(self, key: str, target: str) -> str:
        return f"{self.p}:pending:{key}|{target}"

    @property
    def pending_index(self) -> str:
        return f"{self.p}:pending-index"

    @property
    def due(self) -> str:
        return f"{self.p}:due"

    def lock_name(self, name: str) -> str:
        return f"{self.p}:lock:{name}"

    def waiting_key(self, uid: str) -> str:
        return f"{self.p}:waiting-uid:{uid}"

    @property
    def parked_uids(self) -> str:
        """uids that parked events wait for (the sweep wakes those that became known)."""
        return f"{self.p}:parked-uids"

    @property
    def to_resolve(self) -> str:
        """Dead letters whose delivery went through, waiting to be marked resolved."""
        return f"{self.p}:deadletters:to-resolve"

    # identity -----------------------------------------------------------------------------
    def resolve(self, uid: str) -> str | None:
        value = self.r.get(self.uid_key(uid))
        return value.decode() if value else None

    def snapshot(self, key: str, event_id: str,
                 extra: Callable[[Any], None] | None = None) -> AppointmentSnapshot:
        """What `_accept` needs to decide, and an order number reserved, in one round trip
        (an order number that goes unused only leaves a gap). `extra` adds the caller's
        writes to that round trip (before the reads)."""
        pipe = self.r.pipeline(transaction=False)
        if extra is not None:
            extra(pipe)
        self.queue_snapshot(pipe, key, event_id)
        return self.snapshot_from(pipe.execute()[-SNAPSHOT_READS:])

    def queue_snapshot(self, pipe: Any, key: str, event_id: str) -> None:
        """Add a snapshot's SNAPSHOT_READS commands to a pipeline (see `snapshot_from`)."""
        pipe.hget(self.appt(key) + ":accepted", event_id)
        pipe.hincrby(self.appt(key), "accepted_counter", 1)
        pipe.hgetall(self.appt(key))
        pipe.smembers(self.appt(key) + ":uids")
        pipe.hgetall(self.appt(key) + ":uid-status")
        pipe.hgetall(self.appt(key) + ":seen")  # a few marks per appointment

    @staticmethod
    def snapshot_from(answers: list[Any]) -> AppointmentSnapshot:
        order, reserved, appt, uids, statuses, seen = answers
        return AppointmentSnapshot(
            accepted_order=int(order) if order else None, next_order=int(reserved),
            appointment={k.decode(): v.decode() for k, v in appt.items()},
            uids={u.decode() for u in uids},
            uid_statuses={k.decode(): v.decode() for k, v in statuses.items()},
            seen={k.decode(): v.decode() for k, v in seen.items()})

    def snapshot_view(self, key: str) -> dict[str, Any]:
        """Read only (for `calehr map`): the appointment, its uids and their statuses."""
        pipe = self.r.pipeline(transaction=False)
        pipe.hgetall(self.appt(key))
        pipe.smembers(self.appt(key) + ":uids")
        pipe.hgetall(self.appt(key) + ":uid-status")
        appt, uids, statuses = pipe.execute()
        return {"appointment": {k.decode(): v.decode() for k, v in appt.items()},
                "uids": {u.decode() for u in uids},
                "uid_statuses": {k.decode(): v.decode() for k, v in statuses.items()}}

    def seen(self, key: str, mark: str) -> str | None:
        value = self.r.hget(self.appt(key) + ":seen", mark)
        return value.decode() if value else None

    def uid_statuses(self, key: str) -> dict[str, str]:
        raw = self.r.hgetall(self.appt(key) + ":uid-status")
        return {k.decode(): v.decode() for k, v in raw.items()}

    def accept(self, key: str, *, event_id: str, uid: str, previous_uid: str | None,
               mark: str, sequence: int, created_at: float, status: str, order: int,
               deliveries: list[Delivery], event_hash: str, unprocessed: str,
               event_state: str, event_reason: str = "",
               extra: Callable[[Any], None] | None = None) -> list[str]:
        """Record an accepted event and queue its deliveries in one MULTI/EXEC.

        All or nothing: a Redis restart or a killed worker cannot leave an event accepted
        with a delivery that is not queued. The same MULTI wakes the events parked on the
        uids it makes known (returned), and keeps this event in the unprocessed set until the
        worker calls `EventStore.followed_up`: a worker killed in between is covered by the sweep.
        """
        pipe = self.r.pipeline(transaction=True)
        at = self.queue_accept(
            pipe, key, event_id=event_id, uid=uid, previous_uid=previous_uid, mark=mark,
            sequence=sequence, created_at=created_at, status=status, order=order,
            deliveries=deliveries, event_hash=event_hash, unprocessed=unprocessed,
            event_state=event_state, event_reason=event_reason, extra=extra,
            existing={d.id for d in deliveries if self.r.exists(self.delivery_key(d.id))})
        return [w.decode() for w in pipe.execute()[at] or []]

    def queue_accept(self, pipe: Any, key: str, *, event_id: str, uid: str,
                     previous_uid: str | None, mark: str, sequence: int, created_at: float,
                     status: str, order: int, deliveries: list[Delivery], event_hash: str,
                     unprocessed: str, event_state: str, event_reason: str = "",
                     extra: Callable[[Any], None] | None = None,
                     existing: set[str] | frozenset[str] = frozenset(),
                     appointment_fields: dict[str, str] | None = None) -> int:
        """`accept`'s writes, added to the caller's MULTI. Returns the index of the woken
        events' answer. `existing`: delivery ids whose record is kept (a retry);
        `appointment_fields`: more fields of the appointment's hash, set in the same HSET."""
        now = repr(clock.now())
        pipe.hset(self.appt(key), mapping={
            "last_sequence": sequence, "last_created": repr(created_at),
            "last_event_id": event_id, "status": status, "updated_at": now,
            **(appointment_fields or {}),
        })
        pipe.hset(self.appt(key) + ":seen", mark, event_id)
        pipe.hset(self.appt(key) + ":accepted", event_id, order)
        pipe.hset(self.appt(key) + ":uid-status", uid, status)
        pipe.sadd(self.appt(key) + ":uids", uid)
        pipe.set(self.uid_key(uid), key)
        if previous_uid:
            pipe.sadd(self.appt(key) + ":uids", previous_uid)
            pipe.set(self.uid_key(previous_uid), key)
        for d in deliveries:
            if d.id not in existing:
                pipe.hset(self.delivery_key(d.id), mapping=self._new_delivery_fields(d))
            pipe.zadd(self.pending(d.appointment_key, d.target), {d.id: d.order}, nx=True)
            pipe.sadd(self.pending_index, f"{d.appointment_key}|{d.target}")
            pipe.sadd(f"{self.p}:event-deliveries:{event_id}", d.id)
        pipe.hset(event_hash, mapping={"state": event_state, "reason": event_reason,
                                       "appointment_key": key, "updated_at": now,
                                       "open_deliveries": len(deliveries)})
        pipe.zadd(unprocessed, {event_id: now})
        known = [uid] + ([previous_uid] if previous_uid and previous_uid != uid else [])
        at = len(pipe)
        queue_script(pipe, self._wake, self._wake_keys(known, unprocessed), [now, *known])
        if extra is not None:
            extra(pipe)
        return at

    @staticmethod
    def _new_delivery_fields(d: Delivery) -> dict[str, Any]:
        now = repr(clock.now())
        return {
            "id": d.id, "event_id": d.event_id, "appointment_key": d.appointment_key,
            "target": d.target, "message_event": d.message_event, "order": d.order,
            "control_id": d.control_id, "state": "pending", "attempts": 0,
            "created_at": now, "first_attempt_at": 0, "next_attempt_at": 0,
            "updated_at": now, "base_event_id": d.base_event_id, "force": int(d.force),
            "reason": "",
        }

    # waiting for a predecessor ------------------------------------------------------------
    def park(self, key: str, needed_uid: str, event_id: str, deadline: float, *,
             event_hash: str, unprocessed: str) -> bool:
        """Mark the event waiting on `needed_uid`, in one MULTI. Returns True when the uid
        became known meanwhile (the accept ran between our look and this park): then the
        event is woken at once and the caller re-queues it."""
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(event_hash, mapping={"state": "waiting", "reason": "waiting_for_predecessor",
                                       "appointment_key": key, "waiting_for": needed_uid,
                                       "updated_at": repr(clock.now())})
        pipe.zrem(unprocessed, event_id)
        pipe.sadd(self.waiting_key(needed_uid), event_id)
        pipe.sadd(self.parked_uids, needed_uid)
        pipe.zadd(self.due, {f"wait:{event_id}": deadline}, nx=True)
        pipe.exists(self.uid_key(needed_uid))  # known under any key: the event's may be stale
        if not pipe.execute()[-1]:
            return False
        return event_id in self.wake([needed_uid], unprocessed, repr(clock.now()))

    def wake(self, uids: list[str], unprocessed: str, now: str) -> list[str]:
        """Move the events parked on `uids` back to the unprocessed set (see WAKE)."""
        woken = self._wake(keys=self._wake_keys(uids, unprocessed), args=[now, *uids])
        return [w.decode() for w in woken or []]

    def _wake_keys(self, uids: list[str], unprocessed: str) -> list[str]:
        return [unprocessed, self.due, self.parked_uids, *(self.waiting_key(u) for u in uids)]

    def known_parked_uids(self, limit: int = 1000) -> list[str]:
        """Parked-on uids the ledger knows now (their waiters missed their wake-up)."""
        uids = [u.decode() for u in self.r.srandmember(self.parked_uids, limit) or []]
        if not uids:
            return []
        pipe = self.r.pipeline(transaction=False)
        for uid in uids:
            pipe.exists(self.uid_key(uid))
        return [uid for uid, known in zip(uids, pipe.execute(), strict=True) if known]

    # deliveries ---------------------------------------------------------------------------
    def enqueue(self, key: str, target: str, delivery_id: str, order: int) -> None:
        pipe = self.r.pipeline()
        pipe.zadd(self.pending(key, target), {delivery_id: order}, nx=True)
        pipe.sadd(self.pending_index, f"{key}|{target}")
        pipe.execute()

    def head(self, key: str, target: str) -> str | None:
        ids = self.r.zrange(self.pending(key, target), 0, 0)
        return ids[0].decode() if ids else None

    def dequeue(self, key: str, target: str, delivery_id: str) -> None:
        self._dequeue(keys=[self.pending(key, target), self.pending_index],
                      args=[delivery_id, f"{key}|{target}"])

    def queue_commit(self, pipe: Any, d: Delivery, attempt: dict[str, Any], *,
                     wire: bytes | None, response: str, remote_id: str | None,
                     event_hash: str, dead_letter_index: str) -> int:
        """Everything a delivered message changes, added to the caller's MULTI: the wire and
        answer, the attempt, the target's applied state, the queue and the event's open count. A
        crash leaves either all of it or none (then the retry sends again under the same
        MSH-10). Returns the index of the first of its COMMIT_ANSWERS answers (`committed_from`)."""
        tkey = f"{self.appt(d.appointment_key)}:target:{d.target}"
        now = repr(clock.now())
        fields: dict[str, Any] = {"state": "delivered", "reason": "", "updated_at": now}
        if wire is not None:
            fields["wire"] = self.cipher.encrypt(wire)
        if response:
            fields["response"] = self.cipher.encrypt(response.encode())
        applied: dict[str, Any] = {"applied_order": d.order, "message_event": d.message_event,
                                   "updated_at": now}
        if remote_id:
            applied["ehr_id"] = remote_id
        pipe.hset(self.delivery_key(d.id), mapping=fields)
        pipe.rpush(self.delivery_key(d.id) + ":attempts", json.dumps(attempt))
        pipe.hset(tkey, mapping=applied)
        pipe.rpush(f"{tkey}:control-ids", d.control_id)
        at = len(pipe)
        self._queue_dequeue(pipe, d)
        queue_script(pipe, self._progress, [event_hash, dead_letter_index, self.to_resolve],
                     [now, "resolve"])
        return at

    @staticmethod
    def committed_from(answers: list[Any]) -> Committed:
        _, (open_left, dl_id) = answers
        return Committed(int(open_left), dl_id.decode() if dl_id else None)

    def _queue_dequeue(self, pipe: Any, d: Delivery) -> None:
        queue_script(pipe, self._dequeue, [self.pending(d.appointment_key, d.target),
                                           self.pending_index],
                     [d.id, f"{d.appointment_key}|{d.target}"])

    def finish_delivery(self, d: Delivery, state: str, reason: str, *, event_hash: str,
                        dead_letter_index: str) -> int:
        """A delivery ends dead or skipped: its state, its place in the queue and the event's
        open count (the event is done at 0) change in one MULTI. Returns the open count left."""
        now = repr(clock.now())
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(self.delivery_key(d.id), mapping={"state": state, "reason": reason,
                                                    "updated_at": now})
        self._queue_dequeue(pipe, d)
        queue_script(pipe, self._progress, [event_hash, dead_letter_index, self.to_resolve],
                     [now, ""])
        return int(pipe.execute()[-1][0])

    def requeue(self, d: Delivery, *, force: bool, event_hash: str) -> bool:
        """Replay: the delivery goes back in its queue (see REQUEUE). False: already queued."""
        return bool(self._requeue(
            keys=[self.delivery_key(d.id), event_hash, self.pending(d.appointment_key, d.target),
                  self.pending_index],
            args=[repr(clock.now()), int(force), d.order, f"{d.appointment_key}|{d.target}", d.id]))

    # per-target applied state --------------------------------------------------------------
    def target_key(self, key: str, target: str) -> str:
        """What `target` holds of the appointment: applied order, message event, EHR id."""
        return f"{self.appt(key)}:target:{target}"

    def control_ids(self, key: str, target: str) -> list[str]:
        return [c.decode() for c in self.r.lrange(f"{self.appt(key)}:target:{target}:control-ids", 0, -1)]

    # scheduling ---------------------------------------------------------------------------
    def schedule(self, key: str, target: str, when: float) -> None:
        self.r.zadd(self.due, {f"drain:{key}|{target}": when}, lt=True)
        self.r.zadd(self.due, {f"drain:{key}|{target}": when}, nx=True)

    def pop_due(self, now: float, limit: int = 1000) -> list[str]:
        items = self.r.zrangebyscore(self.due, 0, now, start=0, num=limit)
        if not items:
            return []
        self.r.zrem(self.due, *items)
        return [i.decode() for i in items]

