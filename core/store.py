"""The event store: every accepted webhook body, encrypted, under an event id.

A body is stored once: the SHA-256 of the raw bytes maps to the first event id, so an exact
duplicate is recognised atomically (one Lua script) and nothing is queued for it.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass

import redis

from core import clock
from core.crypto import Cipher
from core.redis_client import Keys

# KEYS: event-hash key, event key, unprocessed zset, ignored zset, dispatch list, counter hash
# ARGV: event id, encrypted body, sha, trigger, received_at, state, source, counter field when
# stored, counter field when a duplicate ("" = no counter), "1" = append the id to the dispatch list
# One script, so the webhook's answer waits for exactly one durable write.
_PUT = """
local existing = redis.call('GET', KEYS[1])
if existing then
  if ARGV[9] ~= '' then redis.call('HINCRBY', KEYS[6], ARGV[9], 1) end
  return {0, existing}
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], 'body', ARGV[2], 'sha256', ARGV[3], 'trigger', ARGV[4],
           'received_at', ARGV[5], 'state', ARGV[6], 'source', ARGV[7])
if ARGV[6] == 'received' then
  redis.call('ZADD', KEYS[3], ARGV[5], ARGV[1])
  if ARGV[10] == '1' then redis.call('RPUSH', KEYS[5], ARGV[1]) end
elseif ARGV[6] == 'ignored' then
  redis.call('ZADD', KEYS[4], ARGV[5], ARGV[1])
end
if ARGV[8] ~= '' then redis.call('HINCRBY', KEYS[6], ARGV[8], 1) end
return {1, ARGV[1]}
"""


@dataclass(frozen=True)
class StoredEvent:
    event_id: str
    body: bytes
    trigger: str
    received_at: float
    state: str
    reason: str
    appointment_key: str
    source: str


class EventStore:
    def __init__(self, client: redis.Redis, cipher: Cipher, prefix: str = "calehr") -> None:
        self.r = client
        self.cipher = cipher
        self.keys = Keys(prefix)
        self._put = client.register_script(_PUT)

    @staticmethod
    def new_id() -> str:
        return "ev_" + uuid.uuid4().hex[:20]

    def put(self, raw: bytes, trigger: str, *, state: str = "received",
            source: str = "webhook", received_at: float | None = None,
            dispatch: bool = False, counter: tuple[str, str, str] | None = None
            ) -> tuple[str, bool]:
        """Store a raw body. Returns (event_id, duplicate).
        `dispatch`: also append a new event's id to the dispatch list (in the same script);
        `counter`: (hash, field if stored, field if a duplicate) to count it, also in the script."""
        digest = hashlib.sha256(raw).hexdigest()
        event_id = self.new_id()
        at = received_at or clock.now()
        hash_key, stored_field, duplicate_field = counter or ("", "", "")
        created, stored_id = self._put(
            keys=[self.keys.event_by_hash(digest), self.keys.event(event_id),
                  self.keys.unprocessed, self.keys.ignored, self.dispatch_key,
                  hash_key or self.keys.event_by_hash(digest)],
            args=[event_id, self.cipher.encrypt(raw), digest, trigger, repr(at), state, source,
                  stored_field, duplicate_field, "1" if dispatch else "0"],
        )
        stored = stored_id.decode() if isinstance(stored_id, bytes) else stored_id
        return stored, not bool(created)

    @property
    def dispatch_key(self) -> str:
        """New event ids, in arrival order, for the dispatcher to hand to the workers."""
        return f"{self.keys.p}:events:dispatch"

    def take_dispatch(self, count: int, timeout: float) -> list[str]:
        """Up to `count` ids from the dispatch list, waiting up to `timeout` s for the first.
        An id taken here and then lost (a crash) stays in the unprocessed set: the sweep sends it.
        BLPOP and LPOP with a count (Redis 6.2, as the wheel's embedded one: no BLMPOP)."""
        taken: list[bytes] = []
        if timeout > 0:
            first = self.r.blpop([self.dispatch_key], timeout)
            if not first:
                return []
            taken, count = [first[1]], count - 1
        if count > 0:
            taken += self.r.lpop(self.dispatch_key, count) or []
        return [i.decode() for i in taken]

    def get(self, event_id: str) -> StoredEvent | None:
        return self.decode(event_id, self.r.hgetall(self.keys.event(event_id)))

    def decode(self, event_id: str, data: dict[bytes, bytes]) -> StoredEvent | None:
        """An event's hash as read (HGETALL) -> the event, its body decrypted."""
        if not data or b"body" not in data:
            return None
        return StoredEvent(
            event_id=event_id,
            body=self.cipher.decrypt(data[b"body"]),
            trigger=data.get(b"trigger", b"").decode(),
            received_at=float(data.get(b"received_at", b"0")),
            state=data.get(b"state", b"").decode(),
            reason=data.get(b"reason", b"").decode(),
            appointment_key=data.get(b"appointment_key", b"").decode(),
            source=data.get(b"source", b"").decode(),
        )

    def save_normalised(self, event_id: str, data: dict, pipe: object = None) -> None:
        """Keep the worker's normalised view (encrypted) for the console and for audits.
        With `pipe`: added to that pipeline (the caller executes it)."""
        token = self.cipher.encrypt(json.dumps(data, default=str).encode())
        (pipe or self.r).hset(self.keys.event(event_id), "normalised", token)

    def normalised(self, event_id: str) -> dict | None:
        token = self.r.hget(self.keys.event(event_id), "normalised")
        return json.loads(self.cipher.decrypt(token)) if token else None

    def exists(self, event_id: str) -> bool:
        return bool(self.r.exists(self.keys.event(event_id)))

    def set_state(self, event_id: str, state: str, reason: str = "",
                  appointment_key: str | None = None) -> None:
        """Record what became of an event. `reason` is codes and ids only."""
        pipe = self.r.pipeline()
        self.queue_state(pipe, event_id, state, reason, appointment_key)
        pipe.execute()

    def queue_state(self, pipe: object, event_id: str, state: str, reason: str = "",
                    appointment_key: str | None = None) -> None:
        """`set_state`'s writes, added to the caller's pipeline."""
        mapping = {"state": state, "reason": reason, "updated_at": repr(clock.now())}
        if appointment_key is not None:
            mapping["appointment_key"] = appointment_key
        pipe.hset(self.keys.event(event_id), mapping=mapping)
        if state == "received":  # (again): a worker must take it up; the sweep sees to it
            pipe.zadd(self.keys.unprocessed, {event_id: clock.now()})
        elif state != "processing":
            pipe.zrem(self.keys.unprocessed, event_id)

    def followed_up(self, event_id: str) -> None:
        """Every step after the event's accept is done: the sweep need not run it again."""
        self.r.zrem(self.keys.unprocessed, event_id)

    def state(self, event_id: str) -> str:
        value = self.r.hget(self.keys.event(event_id), "state")
        return value.decode() if value else ""

    def stuck(self, older_than: float, limit: int = 500) -> list[str]:
        """Events stored but not yet taken up by a worker (e.g. the worker died)."""
        ids = self.r.zrangebyscore(self.keys.unprocessed, 0, clock.now() - older_than,
                                   start=0, num=limit)
        return [i.decode() for i in ids]

    def rotate(self, batch: int = 500) -> int:
        """Re-encrypt every stored body under the newest key."""
        count = 0
        for key in self.r.scan_iter(match=self.keys.event("*"), count=batch):
            token = self.r.hget(key, "body")
            if token:
                self.r.hset(key, "body", self.cipher.rotate(token))
                count += 1
        return count
