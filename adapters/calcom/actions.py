"""Cal.com API v2 changes to a patient's booking that the EHR made: reschedule, cancel, no-show.

`POST /v2/bookings/{uid}/reschedule` `{start, reschedulingReason}` (answers the new booking),
`POST /v2/bookings/{uid}/cancel` `{cancellationReason}`,
`POST /v2/bookings/{uid}/mark-absent` `{attendees: [{email, absent: true}]}`;
`GET /v2/bookings/{uid}` to see whether an earlier try already took (a timeout is no "no").
Cal.com tells the patient and sends its usual webhook back.
"""

from __future__ import annotations

from datetime import datetime

import requests

from adapters.calcom.api import utc_iso
from adapters.calcom.http import CalcomApiError, answer_data, api_session, post_data
from core.config import CalcomSettings


class BookingActions:
    def __init__(self, settings: CalcomSettings,
                 timeout: tuple[float, float] = (3.0, 15.0)) -> None:
        self.settings = settings
        self.timeout = timeout
        self.session = api_session(settings)

    def reschedule(self, booking_uid: str, start: datetime, reason: str) -> str:
        """Returns the new booking's uid (Cal.com makes a new booking for a reschedule)."""
        data = self._post(f"/bookings/{booking_uid}/reschedule",
                          {"start": utc_iso(start), "reschedulingReason": reason})
        uid = data.get("uid") if isinstance(data, dict) else None
        if not isinstance(uid, str) or not uid:
            raise CalcomApiError("Cal.com API answer has no booking uid", transient=False)
        return uid

    def cancel(self, booking_uid: str, reason: str) -> None:
        self._post(f"/bookings/{booking_uid}/cancel", {"cancellationReason": reason})

    def mark_absent(self, booking_uid: str, attendee_email: str) -> None:
        self._post(f"/bookings/{booking_uid}/mark-absent",
                   {"attendees": [{"email": attendee_email, "absent": True}]})

    def get(self, booking_uid: str) -> dict[str, object]:
        """The booking as Cal.com has it now (status, start, rescheduledToUid, attendees)."""
        try:
            resp = self.session.get(f"{self.settings.api_url}/bookings/{booking_uid}",
                                    timeout=self.timeout)
        except requests.RequestException as exc:
            raise CalcomApiError(f"Cal.com API unreachable: {exc.__class__.__name__}") from None
        data = answer_data(resp)
        if not isinstance(data, dict):
            raise CalcomApiError("Cal.com API answer is not one booking", resp.status_code,
                                 transient=False)
        return data

    def _post(self, path: str, body: dict[str, object]) -> object:
        return post_data(self.session, self.settings, path, body, self.timeout)
