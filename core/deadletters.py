"""Dead-letter store: one record per failed event or delivery, kept until a person acts.

Error texts are ids and codes only; the wire message is stored encrypted.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis

from core import clock
from core.crypto import Cipher

STAGES = ("ingest", "ordering", "mapping", "delivery", "conflict", "ehr_change")
# for a person to act on (in the EHR or in Cal.com), then resolve; nothing to replay
PERSON_STAGES = ("conflict", "ehr_change")
STATES = ("open", "replayed", "resolved", "discarded")


@dataclass
class DeadLetter:
    id: str
    stage: str
    target: str
    appointment_key: str
    event_id: str
    delivery_id: str
    error_code: str
    error_class: str
    error_text: str
    state: str
    created_at: float
    updated_at: float
    attempts: list[dict[str, Any]] = field(default_factory=list)
    audit: list[dict[str, Any]] = field(default_factory=list)
    replay_count: int = 0
    message_event: str = ""
    has_wire: bool = False

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


def parse_utc(text: str) -> float | None:
    """An ISO time (Z or an offset; none = UTC) as a timestamp; None when empty or invalid."""
    if not text:
        return None
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "T"))
    except ValueError:
        return None
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


@dataclass(frozen=True)
class DeadLetterFilter:
    state: str | None = None
    target: str | None = None
    stage: str | None = None
    error_code: str | None = None
    appointment_key: str | None = None
    since: float | None = None
    until: float | None = None

    def matches(self, d: DeadLetter) -> bool:
        return (
            (not self.state or d.state == self.state)
            and (not self.target or d.target == self.target)
            and (not self.stage or d.stage == self.stage)
            and (not self.error_code or d.error_code == self.error_code)
            and (not self.appointment_key or d.appointment_key == self.appointment_key)
            and (self.since is None or d.created_at >= self.since)
            and (self.until is None or d.created_at <= self.until)
        )


class DeadLetterStore:
    def __init__(self, client: redis.Redis, cipher: Cipher, prefix: str = "calehr") -> None:
        self.r = client
        self.cipher = cipher
        self.p = f"{prefix}:dl"
        self.prefix = prefix

    def _key(self, dl_id: str) -> str:
        return f"{self.p}:{dl_id}"

    def edits_key(self, dl_id: str) -> str:
        """The encrypted edit history of a dead letter (written by `resend_edited`)."""
        return f"{self.prefix}:dl-edits:{dl_id}"

    def delete(self, d: DeadLetter) -> None:
        """Remove a dead letter and everything that points at it (retention)."""
        pipe = self.r.pipeline()
        pipe.delete(self._key(d.id), self.edits_key(d.id))
        pipe.zrem(f"{self.p}:all", d.id)
        pipe.srem(f"{self.p}:state:{d.state}", d.id)
        if d.delivery_id:
            pipe.delete(self.delivery_index(d.delivery_id))
        elif d.event_id:
            pipe.delete(self.event_index(d.event_id))
        pipe.execute()

    def add(self, *, stage: str, error_code: str, error_class: str, error_text: str,
            target: str = "", appointment_key: str = "", event_id: str = "",
            delivery_id: str = "", attempts: list[dict[str, Any]] | None = None,
            wire: bytes | None = None, message_event: str = "", actor: str = "system") -> str:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage}")
        dl_id = "dl_" + uuid.uuid4().hex[:16]
        now = clock.now()
        audit = [{"ts": now, "actor": actor, "action": "created",
                  "details": {"stage": stage, "error_code": error_code}}]
        mapping: dict[str, Any] = {
            "id": dl_id, "stage": stage, "target": target, "appointment_key": appointment_key,
            "event_id": event_id, "delivery_id": delivery_id, "error_code": error_code,
            "error_class": error_class, "error_text": error_text[:1000], "state": "open",
            "created_at": repr(now), "updated_at": repr(now),
            "attempts": json.dumps(attempts or []), "audit": json.dumps(audit),
            "replay_count": 0, "message_event": message_event,
        }
        if wire is not None:
            mapping["wire"] = self.cipher.encrypt(wire)
        pipe = self.r.pipeline()
        pipe.hset(self._key(dl_id), mapping=mapping)
        pipe.zadd(f"{self.p}:all", {dl_id: now})
        pipe.sadd(f"{self.p}:state:open", dl_id)
        if delivery_id:
            pipe.set(self.delivery_index(delivery_id), dl_id)
        elif event_id:
            pipe.set(self.event_index(event_id), dl_id)
        pipe.execute()
        return dl_id

    def get(self, dl_id: str) -> DeadLetter | None:
        data = self.r.hgetall(self._key(dl_id))
        return self._decode(data) if data else None

    def delivery_index(self, delivery_id: str) -> str:
        """The key that holds the dead-letter id of a delivery, if it has one."""
        return f"{self.p}:by-delivery:{delivery_id}"

    def for_delivery(self, delivery_id: str) -> DeadLetter | None:
        dl_id = self.r.get(self.delivery_index(delivery_id))
        return self.get(dl_id.decode()) if dl_id else None

    def event_index(self, event_id: str) -> str:
        """The key that holds the event-level dead-letter id of an event, if it has one."""
        return f"{self.p}:by-event:{event_id}"

    def for_event(self, event_id: str) -> DeadLetter | None:
        """The event-level (ingest or ordering) dead letter of an event, if any."""
        dl_id = self.r.get(self.event_index(event_id))
        return self.get(dl_id.decode()) if dl_id else None

    def wire(self, dl_id: str) -> bytes | None:
        token = self.r.hget(self._key(dl_id), "wire")
        return self.cipher.decrypt(token) if token else None

    def _decode(self, data: dict[bytes, bytes]) -> DeadLetter:
        s = {k.decode(): v for k, v in data.items()}

        def text(key: str) -> str:
            return s.get(key, b"").decode()

        return DeadLetter(
            id=text("id"), stage=text("stage"), target=text("target"),
            appointment_key=text("appointment_key"), event_id=text("event_id"),
            delivery_id=text("delivery_id"), error_code=text("error_code"),
            error_class=text("error_class"), error_text=text("error_text"), state=text("state"),
            created_at=float(text("created_at") or 0), updated_at=float(text("updated_at") or 0),
            attempts=json.loads(text("attempts") or "[]"), audit=json.loads(text("audit") or "[]"),
            replay_count=int(text("replay_count") or 0), message_event=text("message_event"),
            has_wire="wire" in s,
        )

    def list(self, flt: DeadLetterFilter | None = None, *, offset: int = 0,
             limit: int = 50) -> tuple[list[DeadLetter], int]:
        """Newest first. Returns (page, total matching)."""
        flt = flt or DeadLetterFilter()
        ids = self.r.zrevrangebyscore(
            f"{self.p}:all", flt.until if flt.until is not None else "+inf",
            flt.since if flt.since is not None else "-inf")
        matched: list[DeadLetter] = []
        for start in range(0, len(ids), 500):
            pipe = self.r.pipeline()
            for dl_id in ids[start:start + 500]:
                pipe.hgetall(self._key(dl_id.decode()))
            for data in pipe.execute():
                if data:
                    d = self._decode(data)
                    if flt.matches(d):
                        matched.append(d)
        return matched[offset:offset + limit], len(matched)

    def counts_by_reason(self, state: str = "open") -> dict[str, int]:
        counts: dict[str, int] = {}
        for d in self.list(DeadLetterFilter(state=state), limit=10**9)[0]:
            key = f"{d.stage}:{d.error_code}"
            counts[key] = counts.get(key, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: -kv[1]))

    def states(self, ids: list[str]) -> list[str]:
        """Current state of each id ("gone" once retention removed it), in one round trip."""
        pipe = self.r.pipeline()
        for dl_id in ids:
            pipe.hget(self._key(dl_id), "state")
        return [(s or b"gone").decode() for s in pipe.execute()]

    def open_count(self) -> int:
        return int(self.r.scard(f"{self.p}:state:open"))

    def set_state(self, dl_id: str, state: str, actor: str, action: str,
                  **details: Any) -> DeadLetter:
        if state not in STATES:
            raise ValueError(f"unknown state {state}")
        d = self.get(dl_id)
        if d is None:
            raise KeyError(dl_id)
        self._append_audit(dl_id, actor, action, details, state=state, old_state=d.state)
        return self.get(dl_id)  # type: ignore[return-value]

    def note(self, dl_id: str, actor: str, action: str, **details: Any) -> None:
        """Record a human action (reveal, edit...) without changing the state."""
        self._append_audit(dl_id, actor, action, details)

    def replace_wire(self, dl_id: str, wire: bytes) -> None:
        self.r.hset(self._key(dl_id), "wire", self.cipher.encrypt(wire))

    def _append_audit(self, dl_id: str, actor: str, action: str, details: dict[str, Any],
                      state: str | None = None, old_state: str | None = None) -> None:
        key = self._key(dl_id)
        now = clock.now()
        for _ in range(20):  # optimistic lock: concurrent replays must not lose audit lines
            with self.r.pipeline() as pipe:
                try:
                    pipe.watch(key)
                    audit = json.loads(pipe.hget(key, "audit") or b"[]")
                    audit.append({"ts": now, "actor": actor, "action": action,
                                  "details": details})
                    pipe.multi()
                    mapping: dict[str, Any] = {"audit": json.dumps(audit), "updated_at": repr(now)}
                    if state:
                        mapping["state"] = state
                    pipe.hset(key, mapping=mapping)
                    if state and old_state and state != old_state:
                        pipe.srem(f"{self.p}:state:{old_state}", dl_id)
                        pipe.sadd(f"{self.p}:state:{state}", dl_id)
                    if action == "replay":
                        pipe.hincrby(key, "replay_count", 1)
                    pipe.execute()
                    return
                except redis.WatchError:
                    continue
        raise RuntimeError("dead letter audit update kept conflicting")
