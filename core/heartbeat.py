"""Heartbeats: each running component (web, worker, beat, mllp) says "alive" in Redis.

One key per process with a TTL, refreshed by a daemon thread: a process that dies or hangs
stops refreshing and its key expires, so `calehr status` sees it down within TTL seconds.
Values hold ids only (component, host, pid, times), never patient data.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import socket
import threading
from dataclasses import dataclass

import redis

from core import clock
from core.config import Settings

INTERVAL_SECONDS = 5.0
TTL_SECONDS = 20
COMPONENTS = ("web", "worker", "beat", "mllp")


@dataclass(frozen=True)
class Beat:
    component: str
    host: str
    pid: int
    started_at: float
    seen_at: float


def _key_prefix(prefix: str) -> str:
    return f"{prefix}:heartbeat"


class Heartbeat:
    def __init__(self, client: redis.Redis, prefix: str, component: str,
                 ttl_seconds: int = TTL_SECONDS) -> None:
        self.r = client
        self.ttl_seconds = ttl_seconds
        self.component = component
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.started_at = clock.now()
        self.key = f"{_key_prefix(prefix)}:{component}:{self.host}:{self.pid}"
        self._stop = threading.Event()

    def beat(self) -> None:
        value = json.dumps({"component": self.component, "host": self.host, "pid": self.pid,
                            "started_at": self.started_at, "seen_at": clock.now()})
        with contextlib.suppress(redis.RedisError):  # Redis down: status shows that on its own
            self.r.set(self.key, value, ex=self.ttl_seconds)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.beat()
            self._stop.wait(INTERVAL_SECONDS)

    def start(self) -> Heartbeat:
        threading.Thread(target=self._run, name=f"heartbeat-{self.component}", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(redis.RedisError):
            self.r.delete(self.key)


def start_heartbeat(settings: Settings, component: str) -> Heartbeat | None:
    """Start beating for this process; None when Redis is not configured."""
    from core.redis_client import RedisNotConfigured, make_redis

    try:
        client = make_redis(settings)
    except RedisNotConfigured:
        return None
    beat = Heartbeat(client, settings.key_prefix, component).start()
    atexit.register(beat.stop)  # a clean exit is "down" at once, not after the TTL
    return beat


def read_beats(client: redis.Redis, prefix: str) -> list[Beat]:
    beats = []
    keys = list(client.scan_iter(f"{_key_prefix(prefix)}:*", count=500))
    for raw in client.mget(keys) if keys else []:
        if raw is None:  # expired between SCAN and MGET
            continue
        data = json.loads(raw)
        beats.append(Beat(data["component"], data["host"], int(data["pid"]),
                          float(data["started_at"]), float(data["seen_at"])))
    return sorted(beats, key=lambda b: (b.component, b.host, b.pid))
