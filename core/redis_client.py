"""One place that makes Redis clients, so every caller gets timeouts."""

from __future__ import annotations

import redis

from core.config import Settings


class RedisNotConfigured(RuntimeError):
    """No REDIS_URL: the command was run outside a `calehr up` folder without the environment."""

    def __init__(self) -> None:
        super().__init__("REDIS_URL is not set")


def make_redis(settings: Settings) -> redis.Redis:
    if not settings.redis_url:
        raise RedisNotConfigured()
    return redis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=2,
        socket_timeout=5,
        health_check_interval=15,
        retry_on_timeout=False,
    )


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
