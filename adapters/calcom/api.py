"""Cal.com API v2 blocker bookings (the optional `api` strategy) and the echo ledger.

A blocker is a booking on a hidden event type that holds a provider's time the EHR booked.
Cal.com sends a webhook for every booking it makes or cancels, ours included. So before each
call the intended booking goes into the echo ledger (Redis, with a TTL); `is_echo()` lets the
pipeline recognise the webhook that comes back and never forward it to the EHR.

Which event type: `calcom.blocker_event_type_id`, else `calcom.blocker_event_type_slug`
(default `ehr-hold`) under the provider's Cal.com username.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import redis

from adapters.calcom.http import CalcomApiError, api_session, post_data
from core import clock
from core.config import CalcomSettings, ProviderSettings
from core.models import AppointmentEvent, EventKind

DEFAULT_BLOCKER_SLUG = "ehr-hold"
ATTENDEE_NAME = "EHR hold"
SLOT_TTL = 86400  # an intended create, until Cal.com has answered with its uid
MIN_UID_TTL = 7 * 86400  # a blocker's uid: until well after its end


@dataclass(frozen=True)
class BlockerType:
    slug: str = DEFAULT_BLOCKER_SLUG
    event_type_id: int | None = None

    @classmethod
    def from_settings(cls, settings: CalcomSettings) -> BlockerType:
        return cls(slug=settings.blocker_event_type_slug,
                   event_type_id=settings.blocker_event_type_id or None)

    def matches(self, event: AppointmentEvent) -> bool:
        if self.event_type_id is not None and event.event_type_id == self.event_type_id:
            return True
        return bool(event.event_type_slug) and event.event_type_slug == self.slug


def utc_iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


# echo ledger ------------------------------------------------------------------------------
def _slot_key(prefix: str, user: str, start: datetime) -> str:
    return f"{prefix}:echo:slot:{user.lower()}|{utc_iso(start)}"


def _uid_key(prefix: str, booking_uid: str) -> str:
    return f"{prefix}:echo:uid:{booking_uid}"


def expect_create(r: redis.Redis, prefix: str, provider: ProviderSettings, start: datetime,
                  block_uid: str) -> None:
    """Before POST /v2/bookings: the webhook may arrive before the call returns."""
    r.set(_slot_key(prefix, provider.calcom_user, start), block_uid, ex=SLOT_TTL)


def created(r: redis.Redis, prefix: str, provider: ProviderSettings, start: datetime,
            end: datetime, booking_uid: str, block_uid: str) -> None:
    """Cal.com answered with the booking uid: from now on the uid identifies the echo."""
    ttl = max(MIN_UID_TTL, int(end.timestamp() - clock.now()) + MIN_UID_TTL)
    pipe = r.pipeline()
    pipe.set(_uid_key(prefix, booking_uid), block_uid, ex=ttl)
    pipe.delete(_slot_key(prefix, provider.calcom_user, start))
    pipe.execute()


def forget_slot(r: redis.Redis, prefix: str, provider: ProviderSettings, start: datetime) -> None:
    r.delete(_slot_key(prefix, provider.calcom_user, start))


def expect_cancel(r: redis.Redis, prefix: str, booking_uid: str, block_uid: str) -> None:
    """Before POST /v2/bookings/{uid}/cancel: keep the uid known for the webhook that follows."""
    key = _uid_key(prefix, booking_uid)
    ttl = int(r.ttl(key) or 0)
    r.set(key, block_uid, ex=max(ttl, SLOT_TTL))


def is_echo(r: redis.Redis, event: AppointmentEvent, prefix: str = "calehr",
            blocker: BlockerType = BlockerType()) -> bool:
    """True when this Cal.com event is about a blocker booking the bridge made itself."""
    uids = [u for u in (event.uid, event.previous_uid) if u]
    if uids and r.exists(*(_uid_key(prefix, u) for u in uids)):  # one call, counts hits
        return True
    if event.kind not in (EventKind.CREATED, EventKind.REQUESTED) or event.start is None:
        return False
    if not blocker.matches(event):
        return False
    users = {u for u in (event.organizer.username, event.organizer.email) if u}
    return bool(users) and r.exists(*(_slot_key(prefix, u, event.start) for u in users)) > 0


# HTTP -------------------------------------------------------------------------------------
class BlockerApi:
    """POST /v2/bookings and POST /v2/bookings/{uid}/cancel, API version from the settings."""

    def __init__(self, settings: CalcomSettings,
                 timeout: tuple[float, float] = (3.0, 10.0)) -> None:
        self.settings = settings
        self.blocker = BlockerType.from_settings(settings)
        self.timeout = timeout
        self.session = api_session(settings)

    def create(self, provider: ProviderSettings, start: datetime, end: datetime,
               block_uid: str) -> str:
        body: dict[str, object] = {
            "start": utc_iso(start),
            "lengthInMinutes": max(1, int((end - start).total_seconds() // 60)),
            "attendee": {"name": ATTENDEE_NAME, "email": self.settings.blocker_attendee_email,
                         "timeZone": "UTC", "language": "en"},
            "metadata": {"origin": "ehr-bridge", "blockUid": block_uid},
        }
        if self.blocker.event_type_id is not None:
            body["eventTypeId"] = self.blocker.event_type_id
        else:
            body.update(eventTypeSlug=self.blocker.slug, username=provider.calcom_user)
        data = self._post("/bookings", body)
        uid = data.get("uid") if isinstance(data, dict) else None
        if not isinstance(uid, str) or not uid:
            raise CalcomApiError("Cal.com API answer has no booking uid", transient=False)
        return uid

    def cancel(self, booking_uid: str) -> None:
        try:
            self._post(f"/bookings/{booking_uid}/cancel",
                       {"cancellationReason": "The EHR released this time"})
        except CalcomApiError as exc:
            if exc.status in (404, 410):
                return  # already gone: what we wanted
            raise

    def _post(self, path: str, body: dict[str, object]) -> object:
        return post_data(self.session, self.settings, path, body, self.timeout)
