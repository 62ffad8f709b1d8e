"""Audit log: who did what, when, to which record. Ids and codes only, no PHI."""

from __future__ import annotations

import getpass
import json
import time
from dataclasses import dataclass
from typing import Any

import redis


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
        self.max_entries = max_entries

    def record(self, actor: str, action: str, record: str, **details: Any) -> None:
        pipe = self.r.pipeline()
        self.queue(pipe, actor, action, record, **details)
        pipe.execute()

    def queue(self, pipe: Any, actor: str, action: str, record: str, **details: Any) -> None:
        """Add an entry to a pipeline the caller executes (with the change it records)."""
        entry = {"ts": time.time(), "actor": actor, "action": action, "record": record,
                 "details": details}
        pipe.lpush(self.key, json.dumps(entry, default=str))
        pipe.ltrim(self.key, 0, self.max_entries - 1)

    def entries(self, limit: int = 100, offset: int = 0, record: str | None = None,
                actor: str | None = None) -> list[AuditEntry]:
        out: list[AuditEntry] = []
        start = offset
        while len(out) < limit:
            chunk = self.r.lrange(self.key, start, start + 499)
            if not chunk:
                break
            start += len(chunk)
            for raw in chunk:
                data = json.loads(raw)
                if record and data["record"] != record:
                    continue
                if actor and data["actor"] != actor:
                    continue
                out.append(AuditEntry(**data))
                if len(out) >= limit:
                    break
        return out


def system_actor() -> str:
    return "system"


def cli_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"
