"""The console's local users, kept in Redis so staff are added without editing TOML.

One Redis hash, user name -> JSON {password_hash, role, created_at, updated_at}. Only
password hashes are stored. `[[users]]` in the config are still honoured and win on a clash:
the file is what the site reviewed. Every change is audited in the same transaction.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass

import redis
from werkzeug.security import generate_password_hash

from core import clock
from core.audit import AuditLog
from core.config import Settings, UserSettings

ROLES = ("viewer", "operator", "admin")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


class UserError(ValueError):
    """A user change that cannot be made; the message says why."""


@dataclass(frozen=True)
class StoredUser:
    username: str
    role: str
    source: str  # "redis" (calehr users) or "config" ([[users]])
    created_at: float = 0.0


def new_password() -> str:
    """A random password for a person to type once and then change: 20 url-safe characters."""
    return secrets.token_urlsafe(15)


class UserStore:
    def __init__(self, client: redis.Redis, prefix: str, configured: tuple[UserSettings, ...] = (),
                 audit: AuditLog | None = None) -> None:
        self.r = client
        self.key = f"{prefix}:console:users"
        self.configured = {u.username: u for u in configured}
        self.audit = audit or AuditLog(client, prefix)

    @classmethod
    def for_settings(cls, client: redis.Redis, settings: Settings) -> UserStore:
        return cls(client, settings.key_prefix, settings.users)

    def get(self, username: str) -> UserSettings | None:
        """The user the console signs in, config first."""
        if username in self.configured:
            return self.configured[username]
        raw = self.r.hget(self.key, username)
        if raw is None:
            return None
        data = json.loads(raw)
        return UserSettings(username=username, password_hash=data["password_hash"],
                            role=data["role"])

    def list(self) -> list[StoredUser]:
        users = [StoredUser(u.username, u.role, "config") for u in self.configured.values()]
        for name, raw in sorted(self.r.hgetall(self.key).items()):
            username = name.decode()
            if username in self.configured:
                continue
            data = json.loads(raw)
            users.append(StoredUser(username, data["role"], "redis", float(data["created_at"])))
        return sorted(users, key=lambda u: u.username)

    def count(self) -> int:
        return len(self.configured) + int(self.r.hlen(self.key))

    def add(self, username: str, role: str, password: str, actor: str) -> None:
        _check_name(username)
        _check_role(role)
        if username in self.configured:
            raise UserError(f"{username} is already a [[users]] entry in the config")
        now = clock.now()
        record = json.dumps({"password_hash": generate_password_hash(password), "role": role,
                             "created_at": now, "updated_at": now})
        if not self.r.hsetnx(self.key, username, record):
            raise UserError(f"user {username} already exists")
        self.audit.record(actor, "users.add", f"user:{username}", role=role)

    def set_role(self, username: str, role: str, actor: str) -> None:
        _check_role(role)
        self._update(username, actor, "users.set_role", role=role)

    def set_password(self, username: str, password: str, actor: str) -> None:
        self._update(username, actor, "users.reset_password",
                     password_hash=generate_password_hash(password))

    def remove(self, username: str, actor: str) -> None:
        self._editable(username)
        pipe = self.r.pipeline()
        pipe.hdel(self.key, username)
        self.audit.queue(pipe, actor, "users.remove", f"user:{username}")
        pipe.execute()

    def _editable(self, username: str) -> dict:
        if username in self.configured:
            raise UserError(f"{username} is defined in the config's [[users]]: change it there")
        raw = self.r.hget(self.key, username)
        if raw is None:
            raise UserError(f"no user {username}")
        return json.loads(raw)

    def _update(self, username: str, actor: str, action: str, **fields: str) -> None:
        data = self._editable(username)
        data.update(fields, updated_at=clock.now())
        pipe = self.r.pipeline()
        pipe.hset(self.key, username, json.dumps(data))
        details = {"role": fields["role"]} if "role" in fields else {}
        self.audit.queue(pipe, actor, action, f"user:{username}", **details)
        pipe.execute()


def _check_name(username: str) -> None:
    if not _NAME.match(username):
        raise UserError("a user name is 1-64 letters, digits and . _ @ - (starting with a "
                        "letter or digit)")


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise UserError(f"role must be one of {', '.join(ROLES)}")
