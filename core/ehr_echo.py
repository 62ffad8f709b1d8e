"""What each EHR holds of our own appointments: its filler id, and the last state it has.

Per (appointment key, target), in Redis:
- the EHR's filler id (SCH-2), learned from its S12/S14 echo, sent back in SCH-2 later;
- the state the EHR has (`booked|start|end`, `cancelled`, `noshow`), and who said so: `sent`
  (we delivered it) or `ehr` (the EHR reported a change it made itself);
- the last few states we sent: an EHR that echoes may echo an older message after a newer one.

An outbound message that would only tell the EHR what it reported itself is an echo of its own
change (Cal.com's webhook after the bridge acted on Cal.com for the EHR) and is not sent.
No patient data here: ids, codes and times only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import redis

SENT_HISTORY = 10
TTL_SECONDS = 400 * 86400  # appointments are booked up to a year ahead
BOOKED_EVENTS = ("S12", "S13", "S14")


def fingerprint(message_event: str, start: datetime | None, end: datetime | None,
                status: str = "") -> str:
    """The state a message leaves the EHR in ('' when the message says nothing about it)."""
    word = status.strip().lower()
    if message_event in ("S15", "S16", "S17") or word in ("cancelled", "deleted"):
        return "cancelled"
    if message_event == "S26" or word == "noshow":
        return "noshow"
    if message_event in BOOKED_EVENTS and start is not None and end is not None:
        return f"booked|{_iso(start)}|{_iso(end)}"
    return ""


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Filler:
    id: str
    namespace: str = ""


class EhrEchoLedger:
    def __init__(self, client: redis.Redis, prefix: str = "calehr") -> None:
        self.r = client
        self.p = prefix

    def _key(self, key: str, target: str) -> str:
        return f"{self.p}:ehr-state:{key}|{target}"

    def _filler_index(self, target: str) -> str:
        return f"{self.p}:ehr-filler:{target}"

    # filler ids -----------------------------------------------------------------------------
    def record_filler(self, key: str, target: str, filler: Filler) -> bool:
        """Returns True when the id is new or changed."""
        h = self._key(key, target)
        value = f"{filler.id}\x1f{filler.namespace}"
        pipe = self.r.pipeline(transaction=True)
        pipe.hget(h, "filler")
        pipe.hset(h, "filler", value)
        pipe.expire(h, TTL_SECONDS)
        pipe.hset(self._filler_index(target), filler.id, key)
        pipe.expire(self._filler_index(target), TTL_SECONDS)  # idle for a year: gone
        before = pipe.execute()[0]
        return (before.decode() if before else "") != value

    def filler(self, key: str, target: str) -> Filler | None:
        raw = self.r.hget(self._key(key, target), "filler")
        if not raw:
            return None
        ident, _, namespace = raw.decode().partition("\x1f")
        return Filler(ident, namespace)

    def key_for_filler(self, target: str, filler_id: str) -> str | None:
        raw = self.r.hget(self._filler_index(target), filler_id)
        return raw.decode() if raw else None

    # states ---------------------------------------------------------------------------------
    def sent(self, key: str, target: str, state: str) -> None:
        if not state:
            return
        h = self._key(key, target)
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(h, mapping={"state": state, "said_by": "sent"})
        pipe.lpush(h + ":sent", state)
        pipe.ltrim(h + ":sent", 0, SENT_HISTORY - 1)
        pipe.expire(h, TTL_SECONDS)
        pipe.expire(h + ":sent", TTL_SECONDS)
        pipe.execute()

    def reported(self, key: str, target: str, state: str) -> None:
        """The EHR changed the appointment itself: what we sent before is no echo any more."""
        h = self._key(key, target)
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(h, mapping={"state": state, "said_by": "ehr"})
        pipe.delete(h + ":sent")
        pipe.expire(h, TTL_SECONDS)
        pipe.execute()

    def is_echo(self, key: str, target: str, state: str, echoes: bool) -> bool:
        """True when the EHR only tells us what it already has from us (or told us)."""
        h = self._key(key, target)
        current = self.r.hget(h, "state")
        if current is not None and current.decode() == state:
            return True
        return echoes and state.encode() in self.r.lrange(h + ":sent", 0, -1)

    def ehr_made(self, key: str, target: str, state: str) -> bool:
        """True when `state` is what the EHR itself reported last (sending it back is an echo)."""
        current = self.r.hmget(self._key(key, target), "state", "said_by")
        return current[0] is not None and current[0].decode() == state \
            and current[1] == b"ehr"

    def forget(self, key: str, target: str) -> None:
        self.r.delete(self._key(key, target), self._key(key, target) + ":sent")
