"""Inbound messages from the EHR (HL7 over MLLP, FHIR over REST), stored encrypted before we answer.

An HL7 message is deduplicated on (MSH-3, MSH-4, MSH-10): a repeat finds the first copy and
the ACK that was sent for it, so the listener can send that same ACK again and do nothing new.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass

import redis

from core import clock
from core.config import Settings
from core.crypto import Cipher

KEEP_SECONDS = 30 * 86400

# KEYS: dedupe key, message key, log zset
# ARGV: message id, encrypted body, source, kind, received_at, ttl seconds
_CLAIM = """
local existing = redis.call('GET', KEYS[1])
if existing then return {0, existing} end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[6])
redis.call('HSET', KEYS[2], 'body', ARGV[2], 'source', ARGV[3], 'kind', ARGV[4],
           'received_at', ARGV[5], 'state', 'received')
redis.call('EXPIRE', KEYS[2], ARGV[6])
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[1])
return {1, ARGV[1]}
"""


@dataclass(frozen=True)
class Claim:
    message_id: str
    duplicate: bool
    ack: bytes | None  # the answer already sent for the first copy, if any


def dedupe_key(sending_application: str, sending_facility: str, control_id: str) -> str:
    return hashlib.sha256(
        f"{sending_application}\x1f{sending_facility}\x1f{control_id}".encode()).hexdigest()


class InboundStore:
    def __init__(self, client: redis.Redis, cipher: Cipher, prefix: str = "calehr",
                 keep_seconds: int = KEEP_SECONDS) -> None:
        self.r = client
        self.cipher = cipher
        self.p = prefix
        self.keep = keep_seconds
        self._claim = client.register_script(_CLAIM)

    @classmethod
    def for_settings(cls, settings: Settings, client: redis.Redis,
                     cipher: Cipher) -> InboundStore:
        """Kept as long as event bodies (`retention.event_body_days`, at least a day)."""
        return cls(client, cipher, settings.key_prefix,
                   int(settings.retention.event_body_days * 86400) or 86400)

    def _key(self, message_id: str) -> str:
        return f"{self.p}:inbound:{message_id}"

    @property
    def log_key(self) -> str:
        return f"{self.p}:inbound:log"

    def claim(self, raw: bytes, *, source: str, kind: str, dedupe: str) -> Claim:
        """Store `raw` encrypted unless a message with the same dedupe key is already stored."""
        message_id = "in_" + uuid.uuid4().hex[:20]
        now = clock.now()
        created, stored = self._claim(
            keys=[f"{self.p}:inbound-dedupe:{dedupe}", self._key(message_id), self.log_key],
            args=[message_id, self.cipher.encrypt(raw), source, kind, repr(now), self.keep])
        stored_id = stored.decode() if isinstance(stored, bytes) else str(stored)
        if created:
            self._trim(now)
            return Claim(stored_id, duplicate=False, ack=None)
        return Claim(stored_id, duplicate=True, ack=self.r.hget(self._key(stored_id), "ack"))

    def put(self, raw: bytes, *, source: str, kind: str) -> str:
        """Store a message that has no dedupe key (a FHIR request)."""
        message_id = "in_" + uuid.uuid4().hex[:20]
        now = clock.now()
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(self._key(message_id), mapping={
            "body": self.cipher.encrypt(raw), "source": source, "kind": kind,
            "received_at": repr(now), "state": "received"})
        pipe.expire(self._key(message_id), self.keep)
        pipe.zadd(self.log_key, {message_id: now})
        pipe.execute()
        self._trim(now)
        return message_id

    def finish(self, message_id: str, outcome: str, ack: bytes | None = None) -> None:
        """Record what became of a message (a code) and the answer sent (no patient data in it)."""
        mapping: dict[str, str | bytes] = {"state": outcome, "finished_at": repr(clock.now())}
        if ack is not None:
            mapping["ack"] = ack
        self.r.hset(self._key(message_id), mapping=mapping)

    def body(self, message_id: str) -> bytes | None:
        token = self.r.hget(self._key(message_id), "body")
        return self.cipher.decrypt(token) if token else None

    def count(self) -> int:
        return int(self.r.zcard(self.log_key))

    def _trim(self, now: float) -> None:
        self.r.zremrangebyscore(self.log_key, "-inf", now - self.keep)
