"""One place that makes Redis clients, so every caller gets timeouts (and follows a Sentinel
failover: with a sentinel:// REDIS_URL the client asks the sentinels for the master again
whenever its connection breaks or the node it reaches has become a read-only replica)."""

from __future__ import annotations

import redis
from redis.sentinel import Sentinel

from core.config import Settings
from core.redis_url import is_sentinel, parse_sentinel_url

TIMEOUTS = {"socket_connect_timeout": 2, "socket_timeout": 5}


class RedisNotConfigured(RuntimeError):
    """No REDIS_URL: the command was run outside a `calehr up` folder without the environment."""

    def __init__(self) -> None:
        super().__init__("REDIS_URL is not set")


def make_redis(settings: Settings) -> redis.Redis:
    if not settings.redis_url:
        raise RedisNotConfigured()
    return redis_for_url(settings.redis_url)


def redis_for_url(url: str) -> redis.Redis:
    if is_sentinel(url):
        return _master_for(url)
    return redis.Redis.from_url(url, health_check_interval=15, retry_on_timeout=False, **TIMEOUTS)


def _master_for(url: str) -> redis.Redis:
    target = parse_sentinel_url(url)
    sentinel_kwargs: dict = {**TIMEOUTS}
    if target.sentinel_password:
        sentinel_kwargs["password"] = target.sentinel_password
    if target.tls:
        sentinel_kwargs["ssl"] = True
    master_kwargs: dict = {"db": target.db, "health_check_interval": 15, "retry_on_timeout": False,
                           **TIMEOUTS}
    if target.username:
        master_kwargs["username"] = target.username
    if target.password is not None:
        master_kwargs["password"] = target.password
    if target.tls:
        master_kwargs["ssl"] = True
    sentinel = Sentinel(list(target.sentinels), sentinel_kwargs=sentinel_kwargs)
    return sentinel.master_for(target.master_name, redis_class=redis.Redis, **master_kwargs)


def queue_script(pipe: redis.client.Pipeline, script: redis.commands.core.Script,
                 keys: list[str], args: list[object]) -> None:
    """Add a Lua script to a pipeline as EVAL with its source. redis-py would send SCRIPT EXISTS
    first for a registered script (one more round trip per execute), and EVALSHA inside a MULTI
    after a Redis restart fails with NOSCRIPT while the rest of the MULTI still runs."""
    pipe.eval(script.script, len(keys), *keys, *args)


class Keys:
    """Redis key names, all under one prefix."""

    def __init__(self, prefix: str) -> None:
        self.p = prefix

    def event(self, event_id: str) -> str:
        return f"{self.p}:event:{event_id}"

    def event_by_hash(self, digest: str) -> str:
        return f"{self.p}:event-hash:{digest}"

    @property
    def unprocessed(self) -> str:
        return f"{self.p}:events:unprocessed"

    @property
    def ignored(self) -> str:
        return f"{self.p}:events:ignored"

    @property
    def event_log(self) -> str:
        return f"{self.p}:events:log"

    def __getattr__(self, name: str) -> str:  # pragma: no cover - guard against typos
        raise AttributeError(name)
