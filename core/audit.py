"""Audit log: who did what, when, to which record. Ids and codes only, no PHI.

Three stores, so noise can never push out what people did:
- `<prefix>:audit`: people's actions (console and CLI: login, reveal, replay, edit, discard...),
  newest first, removed only by age (retention `audit_days`), never by count;
- `<prefix>:audit:system`: the bridge's own entries (event accepted, skipped...), capped by count;
- failed logins: one aggregated entry per (user name, client address) streak, updated in place
  (attempts, first and last time), capped by count and age.
`entries()` reads all three merged, newest first.
"""

from __future__ import annotations

import getpass
import hashlib
import heapq
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis

from core import clock

SYSTEM_ACTOR = "system"
MAX_FAILURE_STREAKS = 10_000


@dataclass(frozen=True)
class AuditEntry:
    ts: float
    actor: str
    action: str
    record: str
    details: dict[str, Any]


class AuditLog:
    def __init__(self, client: redis.Redis, prefix: str = "calehr",
                 max_entries: int = 1_000_000) -> None:
        self.r = client
        self.key = f"{prefix}:audit"
        self.system_key = f"{prefix}:audit:system"
        self.failures_key = f"{prefix}:audit:login-failures"
        self.max_entries = max_entries

    def record(self, actor: str, action: str, record: str, **details: Any) -> None:
        pipe = self.r.pipeline()
        self.queue(pipe, actor, action, record, **details)
        pipe.execute()

    def queue(self, pipe: Any, actor: str, action: str, record: str, **details: Any) -> None:
        """Add an entry to a pipeline the caller executes (with the change it records)."""
        entry = {"ts": clock.now(), "actor": actor, "action": action, "record": record,
                 "details": details}
        if actor == SYSTEM_ACTOR:
            pipe.lpush(self.system_key, json.dumps(entry, default=str))
            pipe.ltrim(self.system_key, 0, self.max_entries - 1)
        else:
            pipe.lpush(self.key, json.dumps(entry, default=str))

    def login_failed(self, username: str, address: str, streak_seconds: float,
                     blocked: bool = False) -> int:
        """Count one failed login into the streak of (user name, address); returns its attempts.

        A streak ends after `streak_seconds` without a failure; the next failure starts a new
        entry. Blocked attempts count here too, so a flood is one entry, not thousands.
        """
        who = hashlib.sha256(f"{username.lower()}\0{address}".encode()).hexdigest()[:24]
        now = clock.now()
        current = f"{self.failures_key}:current:{who}"
        streak = f"{who}:{int(now * 1000)}"
        if not self.r.set(current, streak, nx=True, px=max(1, int(streak_seconds * 1000))):
            streak = (self.r.get(current) or streak.encode()).decode()
            self.r.pexpire(current, max(1, int(streak_seconds * 1000)))
        key = f"{self.failures_key}:{streak}"
        pipe = self.r.pipeline()
        pipe.hsetnx(key, "first_at", repr(now))
        pipe.hset(key, mapping={"last_at": repr(now), "actor": f"console:{username}",
                                "address": address})
        pipe.hincrby(key, "attempts", 1)
        pipe.hincrby(key, "blocked", 1 if blocked else 0)
        pipe.zadd(self.failures_key, {streak: now})
        results = pipe.execute()
        return int(results[2])

    def trim(self, max_age_seconds: float, system_entries: int,
             now: float | None = None) -> int:
        """Retention: drop people's entries and failure streaks older than the age; cap the
        system list and the streak count. Returns the number of entries removed."""
        cutoff = (now if now is not None else clock.now()) - max_age_seconds
        removed = 0
        for _ in range(100_000):  # oldest are at the tail; bounded
            tail = self.r.lindex(self.key, -1)
            if tail is None or float(json.loads(tail)["ts"]) >= cutoff:
                break
            self.r.rpop(self.key)
            removed += 1
        self.r.ltrim(self.system_key, 0, system_entries - 1)
        old = self.r.zrangebyscore(self.failures_key, "-inf", cutoff)
        extra = max(0, self.r.zcard(self.failures_key) - MAX_FAILURE_STREAKS)
        if extra:
            old += self.r.zrange(self.failures_key, 0, extra - 1)
        for streak in set(old):
            self.r.delete(f"{self.failures_key}:{streak.decode()}")
            self.r.zrem(self.failures_key, streak)
            removed += 1
        return removed

    def entries(self, limit: int = 100, offset: int = 0, record: str | None = None,
                actor: str | None = None) -> list[AuditEntry]:
        out: list[AuditEntry] = []
        merged = heapq.merge(self._list(self.key), self._list(self.system_key),
                             self._failures(), key=lambda e: -e.ts)
        skipped = 0
        for entry in merged:
            if (record and entry.record != record) or (actor and entry.actor != actor):
                continue
            if skipped < offset:
                skipped += 1
                continue
            out.append(entry)
            if len(out) >= limit:
                break
        return out

    def _list(self, key: str) -> Iterator[AuditEntry]:
        start = 0
        while chunk := self.r.lrange(key, start, start + 499):
            start += len(chunk)
            for raw in chunk:
                yield AuditEntry(**json.loads(raw))

    def _failures(self) -> Iterator[AuditEntry]:
        start = 0
        while chunk := self.r.zrevrange(self.failures_key, start, start + 99):
            start += len(chunk)
            for streak in chunk:
                data = {k.decode(): v.decode() for k, v in
                        self.r.hgetall(f"{self.failures_key}:{streak.decode()}").items()}
                if not data:
                    continue
                yield AuditEntry(ts=float(data["last_at"]), actor=data["actor"],
                                 action="console.login_failed", record="console",
                                 details={"attempts": int(data["attempts"]),
                                          "blocked": int(data.get("blocked", 0)),
                                          "first_at": float(data["first_at"]),
                                          "address": data["address"]})


def system_actor() -> str:
    return SYSTEM_ACTOR


def cli_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"
