"""What each EHR holds of our own appointments: its filler id, and the last state it has.

Per (appointment key, target), in Redis:
- the EHR's filler id (SCH-2), learned from its S12/S14 echo, sent back in SCH-2 later;
- the state the EHR has (`booked|start|end`, `cancelled`, `noshow`), and who said so: `sent`
  (we delivered it) or `ehr` (the EHR reported a change it made itself);
- the last few states we sent, with when we sent them: an EHR that echoes may echo an older
  message after a newer one. Only shortly after sending is an older state a possible late echo;
  the caller never drops such a report silently (it may be the clinic moving it back);
- the states the EHR made that the bridge then made in Cal.com, with the Cal.com booking uid,
  so the webhooks Cal.com sends back for them (however late) are not sent to the EHR again.

An outbound message that would only tell the EHR what it reported itself is an echo of its own
change (Cal.com's webhook after the bridge acted on Cal.com for the EHR) and is not sent.
No patient data here: ids, codes and times only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import redis

from core import clock

SENT_HISTORY = 10
LATE_ECHO_SECONDS = 900.0  # an echo of an older message arrives within minutes, not hours
MADE_HISTORY = 10
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

    def _filler_seen(self, target: str) -> str:
        return f"{self.p}:ehr-filler-seen:{target}"

    # filler ids -----------------------------------------------------------------------------
    def record_filler(self, key: str, target: str, filler: Filler) -> bool:
        """Returns True when the id is new or changed."""
        h = self._key(key, target)
        value = f"{filler.id}\x1f{filler.namespace}"
        pipe = self.r.pipeline(transaction=True)
        pipe.hget(h, "filler")
        pipe.hset(h, "filler", value)
        pipe.expire(h, TTL_SECONDS)
        # the index is scored by when each id was last seen, so old ids can be pruned one by one
        pipe.zadd(self._filler_seen(target), {filler.id: clock.now()})
        pipe.hset(self._filler_index(target), filler.id, key)
        pipe.expire(self._filler_index(target), TTL_SECONDS)  # idle for a year: gone
        pipe.expire(self._filler_seen(target), TTL_SECONDS)
        before = pipe.execute()[0]
        return (before.decode() if before else "") != value

    def prune_fillers(self, target: str, older_than_seconds: float = TTL_SECONDS,
                      now: float | None = None, limit: int = 1000) -> int:
        """Forget filler ids not seen for `older_than_seconds` (by then the appointment's own
        record has expired too). Returns how many went."""
        seen = self._filler_seen(target)
        now = clock.now() if now is None else now
        old = self.r.zrangebyscore(seen, "-inf", now - older_than_seconds,
                                   start=0, num=limit)
        if old:
            pipe = self.r.pipeline(transaction=True)
            pipe.hdel(self._filler_index(target), *old)
            pipe.zrem(seen, *old)
            pipe.execute()
        return len(old)

    def filler(self, key: str, target: str) -> Filler | None:
        return self.filler_from(self.r.hget(self._key(key, target), "filler"))

    @staticmethod
    def filler_from(raw: bytes | None) -> Filler | None:
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
        pipe = self.r.pipeline(transaction=True)
        self.queue_sent(pipe, key, target, state)
        pipe.execute()

    def queue_sent(self, pipe: redis.client.Pipeline, key: str, target: str, state: str) -> None:
        """`sent`'s writes, added to the caller's MULTI (nothing for an empty state)."""
        if not state:
            return
        h = self._key(key, target)
        pipe.hset(h, mapping={"state": state, "said_by": "sent"})
        pipe.lpush(h + ":sent", f"{clock.now():.3f}|{state}")
        pipe.ltrim(h + ":sent", 0, SENT_HISTORY - 1)
        pipe.delete(h + ":made")  # a Cal.com change went out: what the EHR made is history
        pipe.expire(h, TTL_SECONDS)
        pipe.expire(h + ":sent", TTL_SECONDS)

    def reported(self, key: str, target: str, state: str,
                 pipe: redis.client.Pipeline | None = None) -> None:
        """The EHR changed the appointment itself: what we sent before is no echo any more.
        With `pipe`, the writes join the caller's MULTI (the caller executes it)."""
        h = self._key(key, target)
        own = pipe is None
        pipe = self.r.pipeline(transaction=True) if pipe is None else pipe
        pipe.hset(h, mapping={"state": state, "said_by": "ehr"})
        pipe.delete(h + ":sent")
        pipe.expire(h, TTL_SECONDS)
        if own:
            pipe.execute()

    def made_in_calcom(self, key: str, target: str, state: str, booking_uid: str) -> None:
        """The bridge made the EHR's `state` in Cal.com as booking `booking_uid`: Cal.com's
        webhook for it is an echo for this EHR, even after the EHR changed it again."""
        h = self._key(key, target) + ":made"
        pipe = self.r.pipeline(transaction=True)
        pipe.lpush(h, f"{booking_uid}|{state}")
        pipe.ltrim(h, 0, MADE_HISTORY - 1)
        pipe.expire(h, TTL_SECONDS)
        pipe.execute()

    def echo_of(self, key: str, target: str, state: str, echoes: bool) -> str:
        """How `state`, reported by the EHR, relates to what it has from us:
        'current' (it has it: an echo), 'recent' (we sent it shortly before a newer state: a late
        echo, or the clinic changing it back; only the caller can tell), or '' (news)."""
        h = self._key(key, target)
        current = self.r.hget(h, "state")
        if current is not None and current.decode() == state:
            return "current"
        if not echoes:
            return ""
        since = clock.now() - LATE_ECHO_SECONDS
        for raw in self.r.lrange(h + ":sent", 0, -1):
            at, _, sent = raw.decode().partition("|")
            if sent == state and _float(at) >= since:
                return "recent"
        return ""

    def ehr_made(self, key: str, target: str, state: str, booking_uid: str = "") -> bool:
        """True when `state` is what the EHR itself reported last, or (with the Cal.com
        booking's uid) one the bridge made in Cal.com for it: sending it back is an echo."""
        pipe = self.r.pipeline(transaction=False)
        self.queue_read(pipe, key, target)
        current, made, _ = pipe.execute()
        return self.made_from(current, made, state, booking_uid)

    def queue_read(self, pipe: redis.client.Pipeline, key: str, target: str) -> None:
        """Three answers: for `made_from` (two) and `filler_from` (one)."""
        h = self._key(key, target)
        pipe.hmget(h, "state", "said_by")
        pipe.lrange(h + ":made", 0, -1)
        pipe.hget(h, "filler")

    @staticmethod
    def made_from(current: list[bytes | None], made: list[bytes], state: str,
                  booking_uid: str = "") -> bool:
        if current[0] is not None and current[0].decode() == state and current[1] == b"ehr":
            return True
        return bool(booking_uid) and f"{booking_uid}|{state}".encode() in made

    def forget(self, key: str, target: str) -> None:
        h = self._key(key, target)
        self.r.delete(h, h + ":sent", h + ":made")


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:  # an entry from before sent times were kept: treat as old
        return 0.0
