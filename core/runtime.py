"""Per-process worker state: clients and stores built from Settings, plus how to send tasks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import redis

from core.audit import AuditLog
from core.config import Settings
from core.conflicts import ConflictChecker
from core.crypto import Cipher
from core.deadletters import DeadLetterStore
from core.ledger import Ledger
from core.metrics import Metrics
from core.redis_client import make_redis
from core.retry import CircuitBreaker
from core.store import EventStore

# kick(appointment_key, target, countdown) / reprocess(event_id, force)
Kick = Callable[[str, str, float | None], None]
Reprocess = Callable[[str, bool], None]
# kick_many(appointment_keys, target): one task drains the first message of each (a batch)
KickMany = Callable[[list[str], str], None]
KICK_MANY_CHUNK = 16  # keys per task: a few tasks, so that the worker processes share them
# settings -> a Runtime whose kick/reprocess send tasks (the composition root supplies it)
RuntimeFactory = Callable[[Settings], "Runtime"]


@dataclass
class Runtime:
    settings: Settings
    redis: redis.Redis
    store: EventStore
    ledger: Ledger
    deadletters: DeadLetterStore
    breaker: CircuitBreaker
    audit: AuditLog
    kick: Kick
    reprocess: Reprocess
    metrics: Metrics
    conflicts: ConflictChecker
    kick_many: KickMany | None = None

    def kick_all(self, keys: list[str], target: str) -> None:
        """Drain these queues of one target: a few batch tasks (one task each without
        `kick_many`)."""
        if self.kick_many is None:
            for key in keys:
                self.kick(key, target, None)
            return
        for start in range(0, len(keys), KICK_MANY_CHUNK):
            self.kick_many(keys[start:start + KICK_MANY_CHUNK], target)

    @classmethod
    def build(cls, settings: Settings, kick: Kick, reprocess: Reprocess,
              client: redis.Redis | None = None, kick_many: KickMany | None = None) -> Runtime:
        client = client or make_redis(settings)
        cipher = Cipher(settings.security.encryption_keys)
        prefix = settings.key_prefix
        return cls(
            settings=settings, redis=client, store=EventStore(client, cipher, prefix),
            ledger=Ledger(client, cipher, prefix),
            deadletters=DeadLetterStore(client, cipher, prefix),
            breaker=CircuitBreaker(client, settings.delivery, prefix),
            audit=AuditLog(client, prefix), kick=kick, reprocess=reprocess,
            metrics=Metrics(client, prefix), conflicts=ConflictChecker(client, cipher, prefix),
            kick_many=kick_many,
        )
