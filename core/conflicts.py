"""Conflicts: the EHR and Cal.com hold the same time of one provider.

Checked from both sides: when an EHR block arrives (`check_block`) and when a Cal.com booking
is accepted (`track`). The Cal.com side comes from a per-provider index of open bookings that
`track` keeps (appointment key → start, end, last event id; a zset by end time), so a check reads
only the bookings that end after the block starts, not the whole ledger. Each overlapping pair
becomes one dead letter at stage `conflict` for a person to resolve, whichever side came second;
its text holds ids, codes and times only.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

import redis

from core.blocks import KEEP_AFTER_END_SECONDS, Block, BusyBlockStore
from core.config import ProviderSettings
from core.crypto import Cipher
from core.deadletters import DeadLetterStore
from core.models import AppointmentEvent, EventKind

log = logging.getLogger(__name__)
HOLDING_KINDS = (EventKind.CREATED, EventKind.REQUESTED, EventKind.RESCHEDULED)
RELEASING_KINDS = (EventKind.CANCELLED, EventKind.REJECTED)
SEEN_TTL = 90 * 86400


@dataclass(frozen=True)
class CalcomBooking:
    appointment_key: str
    event_id: str
    start: datetime
    end: datetime


class ConflictChecker:
    def __init__(self, client: redis.Redis, cipher: Cipher, prefix: str = "calehr") -> None:
        self.r = client
        self.p = prefix
        self.blocks = BusyBlockStore(client, prefix)
        self.deadletters = DeadLetterStore(client, cipher, prefix)

    def _index(self, ehr_id: str) -> str:
        return f"{self.p}:calbookings:{ehr_id}"

    # the Cal.com side ---------------------------------------------------------------------
    def track(self, provider: ProviderSettings, event: AppointmentEvent) -> list[str]:
        """Keep the index in step with an accepted Cal.com event; a booking that now holds
        time the EHR blocked is recorded. Idempotent. Returns new dead-letter ids."""
        pipe = self.r.pipeline(transaction=True)
        at = self.queue_track(pipe, provider, event)
        answers = pipe.execute()
        return self.after_track(provider, event, answers[at] if at is not None else [])

    def queue_track(self, pipe: redis.client.Pipeline, provider: ProviderSettings,
                    event: AppointmentEvent) -> int | None:
        """`track`'s writes in the caller's MULTI. Returns the index of the answer that
        `after_track` needs (None: nothing to check)."""
        key, index = event.appointment_key, self._index(provider.ehr_id)
        if event.kind in RELEASING_KINDS:
            pipe.hdel(index, key)
            pipe.zrem(index + ":ends", key)
            return None
        if event.kind not in HOLDING_KINDS or event.start is None or event.end is None:
            return None
        pipe.hset(index, key, json.dumps({"event_id": event.event_id,
                                          "start": event.start.isoformat(),
                                          "end": event.end.isoformat()}))
        pipe.zadd(index + ":ends", {key: event.end.timestamp()})
        at = len(pipe)
        pipe.zrangebyscore(self.blocks.ends_key(provider.ehr_id), event.start.timestamp(), "+inf")
        return at

    def after_track(self, provider: ProviderSettings, event: AppointmentEvent,
                    uids: list[bytes]) -> list[str]:
        """The EHR blocks that may overlap the booking (`queue_track`'s answer) -> conflicts
        recorded (new dead-letter ids)."""
        if not uids or event.start is None or event.end is None:
            return []
        booking = CalcomBooking(event.appointment_key, event.event_id, event.start, event.end)
        blocks = self.blocks.get_many(provider.ehr_id, uids)
        overlapping = [b for b in blocks if b.start < booking.end and booking.start < b.end]
        return [dl for b in overlapping if (dl := self._record(provider, b, booking, "calcom"))]

    def purge_ended(self, providers: tuple[ProviderSettings, ...], now: float) -> int:
        """Drop bookings that ended long ago from the index (retention calls this)."""
        removed = 0
        for provider in providers:
            index = self._index(provider.ehr_id)
            old = self.r.zrangebyscore(index + ":ends", "-inf", now - KEEP_AFTER_END_SECONDS)
            for start in range(0, len(old), 500):
                chunk = old[start:start + 500]
                pipe = self.r.pipeline(transaction=True)
                pipe.hdel(index, *chunk)
                pipe.zrem(index + ":ends", *chunk)
                pipe.execute()
            removed += len(old)
        return removed

    def bookings(self, provider: ProviderSettings, ending_after: float) -> list[CalcomBooking]:
        """Open Cal.com appointments of one provider that end after `ending_after`."""
        index = self._index(provider.ehr_id)
        keys = self.r.zrangebyscore(index + ":ends", f"({ending_after}", "+inf")
        if not keys:
            return []
        found = []
        for key, raw in zip(keys, self.r.hmget(index, keys), strict=True):
            if raw:
                data = json.loads(raw)
                found.append(CalcomBooking(key.decode(), data["event_id"],
                                           datetime.fromisoformat(data["start"]),
                                           datetime.fromisoformat(data["end"])))
        return found

    # the EHR side -------------------------------------------------------------------------
    def check_block(self, provider: ProviderSettings, block: Block) -> list[str]:
        """Record each open Cal.com booking that overlaps an EHR block. Returns new ids."""
        return [dl for booking in self.bookings(provider, block.start.timestamp())
                if booking.start < block.end
                and (dl := self._record(provider, block, booking, "ehr"))]

    def _record(self, provider: ProviderSettings, block: Block, booking: CalcomBooking,
                second: str) -> str | None:
        seen = f"{self.p}:conflict-seen:{block.uid}|{provider.ehr_id}|{booking.appointment_key}"
        if not self.r.set(seen, "1", nx=True, ex=SEEN_TTL):
            return None  # this pair is already recorded, from either side
        origin = block.origin or "ehr"
        came = ("the EHR booked over it" if second == "ehr"
                else "the Cal.com booking came after the EHR block")
        dl_id = self.deadletters.add(
            stage="conflict", error_code="overlap", error_class="SlotConflict",
            error_text=(f"EHR block {block.uid} ({origin}) for provider {provider.ehr_id}, "
                        f"{_span(block.start, block.end)}, overlaps the Cal.com appointment "
                        f"{booking.appointment_key} (event {booking.event_id}, "
                        f"{_span(booking.start, booking.end)}); {came}"),
            target=provider.ehr_id, appointment_key=booking.appointment_key,
            message_event=origin.partition(":")[2])
        log.warning("conflict recorded", extra={"dead_letter_id": dl_id,
                                                "appointment_key": booking.appointment_key,
                                                "outcome": "conflict"})
        return dl_id


def _span(start: datetime, end: datetime) -> str:
    return f"{start.astimezone(UTC):%Y-%m-%dT%H:%MZ} to {end.astimezone(UTC):%Y-%m-%dT%H:%MZ}"
