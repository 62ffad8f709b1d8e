"""Conflicts: the EHR booked time that a booking made through Cal.com already holds.

The Cal.com side is read from what the bridge already keeps: the appointment ledger (status,
last event) and the normalised event (organizer, start, end; encrypted). Each overlap becomes
one dead letter at stage `conflict` for a person to resolve; its text holds ids, codes and
times only.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import redis

from core.config import ProviderSettings
from core.crypto import Cipher, DecryptError
from core.store import EventStore
from deadletter.store import DeadLetterStore

log = logging.getLogger(__name__)
CLOSED_STATUSES = ("cancelled", "rejected")
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
        self.events = EventStore(client, cipher, prefix)
        self.deadletters = DeadLetterStore(client, cipher, prefix)

    def bookings(self, provider: ProviderSettings) -> Iterator[CalcomBooking]:
        """Open Cal.com appointments of one provider, as the ledger last saw them."""
        batch: list[bytes] = []
        for key in self.r.scan_iter(match=f"{self.p}:appt:*", count=1000, _type="HASH"):
            batch.append(key)
            if len(batch) >= 500:
                yield from self._read(batch, provider.calcom_user.lower())
                batch = []
        yield from self._read(batch, provider.calcom_user.lower())

    def _read(self, keys: list[bytes], user: str) -> Iterator[CalcomBooking]:
        pipe = self.r.pipeline(transaction=False)
        for key in keys:
            pipe.hmget(key, "last_event_id", "status")
        for key, (event_id, status) in zip(keys, pipe.execute(), strict=True):
            if not event_id or (status or b"").decode() in CLOSED_STATUSES:
                continue  # not an appointment hash, or no longer holds the time
            try:
                data = self.events.normalised(event_id.decode())
            except DecryptError:
                continue
            if not data or not data.get("start") or not data.get("end"):
                continue
            organizer = data.get("organizer") or {}
            if user not in (str(organizer.get("username", "")).lower(),
                            str(organizer.get("email", "")).lower()):
                continue
            yield CalcomBooking(appointment_key=key.decode()[len(self.p) + len(":appt:"):],
                                event_id=event_id.decode(),
                                start=datetime.fromisoformat(data["start"]),
                                end=datetime.fromisoformat(data["end"]))

    def check(self, provider: ProviderSettings, block_uid: str, start: datetime, end: datetime,
              origin: str) -> list[str]:
        """Record each Cal.com booking that overlaps [start, end). Returns new dead-letter ids."""
        recorded = []
        for booking in self.bookings(provider):
            if not (booking.start < end and start < booking.end):
                continue
            seen = f"{self.p}:conflict-seen:{block_uid}|{provider.ehr_id}|{booking.appointment_key}"
            if not self.r.set(seen, "1", nx=True, ex=SEEN_TTL):
                continue
            dl_id = self.deadletters.add(
                stage="conflict", error_code="overlap", error_class="SlotConflict",
                error_text=(f"EHR block {block_uid} ({origin}) for provider {provider.ehr_id}, "
                            f"{_span(start, end)}, overlaps the Cal.com appointment "
                            f"{booking.appointment_key} (event {booking.event_id}, "
                            f"{_span(booking.start, booking.end)})"),
                target=provider.ehr_id, appointment_key=booking.appointment_key,
                message_event=origin.partition(":")[2])
            log.warning("conflict recorded", extra={"dead_letter_id": dl_id,
                                                    "appointment_key": booking.appointment_key,
                                                    "outcome": "conflict"})
            recorded.append(dl_id)
        return recorded


def _span(start: datetime, end: datetime) -> str:
    return f"{start.astimezone(UTC):%Y-%m-%dT%H:%MZ} to {end.astimezone(UTC):%Y-%m-%dT%H:%MZ}"
