"""Server-side console sessions in Redis (the login throttle is in throttle.py).

The browser holds only a random session id (inside Flask's signed cookie); Redis holds
the user name and the CSRF token under a hash of that id, with an idle timeout. Logout
deletes the record, so a copied cookie stops working at once.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

import redis

from core import clock


@dataclass(frozen=True)
class SessionRecord:
    username: str
    csrf_token: str
    created_at: float
    role: str = ""  # set for single sign-on (OIDC) sessions; local users' role comes from the store


class SessionStore:
    def __init__(self, client: redis.Redis, prefix: str, idle_seconds: int) -> None:
        self.r = client
        self.p = f"{prefix}:console:session"
        self.idle_seconds = max(60, idle_seconds)

    def key(self, session_id: str) -> str:
        return f"{self.p}:{hashlib.sha256(session_id.encode()).hexdigest()}"

    def create(self, username: str, role: str = "") -> str:
        session_id = secrets.token_urlsafe(32)
        key = self.key(session_id)
        pipe = self.r.pipeline()
        pipe.hset(key, mapping={"username": username, "csrf": secrets.token_urlsafe(32),
                                "created_at": repr(clock.now()), "role": role})
        pipe.expire(key, self.idle_seconds)
        pipe.execute()
        return session_id

    def touch(self, session_id: str) -> SessionRecord | None:
        """The live session, its idle timer restarted; None when expired or logged out."""
        key = self.key(session_id)
        data = self.r.hgetall(key)
        if not data or b"username" not in data:
            return None
        self.r.expire(key, self.idle_seconds)
        return SessionRecord(username=data[b"username"].decode(), csrf_token=data[b"csrf"].decode(),
                             created_at=float(data.get(b"created_at", b"0")),
                             role=data.get(b"role", b"").decode())

    def delete(self, session_id: str) -> None:
        self.r.delete(self.key(session_id))
