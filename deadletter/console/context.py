"""What the console needs at run time: settings, Redis, sessions and (lazily) a Runtime."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import redis
from flask import current_app

from core.audit import AuditLog
from core.config import Settings, UserSettings
from core.redis_client import make_redis
from core.runtime import Runtime, RuntimeFactory
from core.users import UserStore
from deadletter.console.jobs import BulkReplayJobs
from deadletter.console.sessions import SessionStore
from deadletter.console.throttle import LoginThrottle


@dataclass
class ConsoleContext:
    settings: Settings
    redis: redis.Redis
    sessions: SessionStore
    throttle: LoginThrottle
    jobs: BulkReplayJobs
    audit: AuditLog
    make_runtime: RuntimeFactory
    _runtime: Runtime | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def build(cls, settings: Settings, make_runtime: RuntimeFactory) -> ConsoleContext:
        client = make_redis(settings)
        prefix, cfg = settings.key_prefix, settings.console
        throttle = LoginThrottle(client, prefix, cfg.login_free_attempts,
                                 cfg.login_base_delay_seconds, cfg.login_max_delay_seconds)
        return cls(settings=settings, redis=client,
                   sessions=SessionStore(client, prefix, settings.console.session_minutes * 60),
                   throttle=throttle, jobs=BulkReplayJobs(client, prefix),
                   audit=AuditLog(client, prefix), make_runtime=make_runtime)

    @property
    def runtime(self) -> Runtime:
        """Built on first use, inside the serving process (after gunicorn forks)."""
        with self._lock:
            if self._runtime is None:
                self._runtime = self.make_runtime(self.settings)
            return self._runtime

    def user(self, username: str) -> UserSettings | None:
        """A local user: [[users]] in the config, else one added with `calehr users add`."""
        return UserStore.for_settings(self.redis, self.settings).get(username)


def console() -> ConsoleContext:
    return current_app.extensions["calehr_console"]
