"""One `celery beat` at a time, however many hosts start one: a leader lock in Redis.

Each beat tries, every tick, to take or renew `<prefix>:lock:beat` (its own token, expiring
after `[redis] beat_lock_seconds`). Only the holder sends due tasks; the others stand by and
take over within one lock period after the leader dies. Taking the lock waits for a replica
when `[redis] replicas_to_confirm` is set, so a failover does not hand it to a second beat.
A tick sent twice in a changeover is harmless: every periodic task is safe to repeat.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from typing import Any

import redis
from celery.beat import PersistentScheduler

from core.config import Settings
from core.redis_client import make_redis
from core.replication import confirm

log = logging.getLogger(__name__)

# KEYS: the lock. ARGV: our token, ttl ms. 2 = taken now, 1 = renewed, 0 = another beat's.
_TAKE_OR_RENEW = """
local holder = redis.call('GET', KEYS[1])
if not holder then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 2 end
if holder == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class LeaderScheduler(PersistentScheduler):
    settings: Settings  # set by worker/factory.py on the app's config

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.settings = self.app.conf.calehr_settings
        self._token = uuid.uuid4().hex
        self._leading = False
        self._client: redis.Redis | None = None

    @property
    def _lock(self) -> str:
        return f"{self.settings.key_prefix}:lock:beat"

    @property
    def _period(self) -> float:
        return max(1.0, self.settings.redis.beat_lock_seconds)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        leading = self._lead()
        if leading != self._leading:
            log.warning("beat: %s", "leading: this beat sends the periodic tasks" if leading
                        else "standing by: another beat holds the leader lock")
            self._leading = leading
        if not leading:
            return self._period / 3
        return min(super().tick(*args, **kwargs), self._period / 3)

    def _lead(self) -> bool:
        try:
            if self._client is None:
                self._client = make_redis(self.settings)
            got = self._client.eval(_TAKE_OR_RENEW, 1, self._lock, self._token,
                                    int(self._period * 1000))
            if got == 2:  # newly taken: a replica must hold it before we act on it
                try:
                    confirm(self._client, self.settings.redis, self.settings.key_prefix)
                except redis.RedisError:
                    self._client.eval(_RELEASE, 1, self._lock, self._token)
                    raise
            return bool(got)
        except redis.RedisError as exc:
            log.error("beat: leader lock unavailable: %s", exc.__class__.__name__)
            return False

    def close(self) -> None:
        if self._leading and self._client is not None:
            with contextlib.suppress(redis.RedisError):  # else it expires on its own
                self._client.eval(_RELEASE, 1, self._lock, self._token)
        super().close()
