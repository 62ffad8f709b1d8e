"""Cal.com API v2 bookings: `GET /v2/bookings` (paged by `take`/`skip`, sorted by `updatedAt`
ascending) and `GET /v2/bookings/{uid}` for the occurrences of a recurring series."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests

from adapters.calcom.http import CalcomApiError, api_session
from core.config import CalcomSettings

PAGE_SIZE = 100
MAX_PAGES = 50  # one run reads at most 5,000 changes; the next run continues from the watermark


@dataclass
class BookingsClient:
    settings: CalcomSettings
    timeout: tuple[float, float] = (5.0, 30.0)

    def __post_init__(self) -> None:
        self.session = api_session(self.settings)

    def updated_since(self, after: str) -> Iterator[dict[str, Any]]:
        """Every booking updated after the ISO instant `after`, oldest change first."""
        for page in range(MAX_PAGES):
            params = {"afterUpdatedAt": after, "sortUpdatedAt": "asc", "take": PAGE_SIZE,
                      "skip": page * PAGE_SIZE}
            body = self._get("/bookings", params)
            data = body.get("data") if isinstance(body, dict) else None
            if not isinstance(data, list):
                raise CalcomApiError("Cal.com API page has no data list")
            yield from data
            pagination = body.get("pagination") or {}
            if not pagination.get("hasNextPage") or len(data) < PAGE_SIZE:
                return

    def series_of(self, uid: str, series_uid: str = "") -> list[dict[str, Any]]:
        """Every occurrence of the recurring series `uid` belongs to ([] if it belongs to none).

        `GET /v2/bookings/{uid}` gives one occurrence with its `recurringBookingUid`; that uid,
        asked the same way, gives the array of all occurrences. A known `series_uid` (a body's
        `recurringEventId`) saves the first call.
        """
        if not series_uid:
            booking = self._get(f"/bookings/{_path_part(uid)}").get("data")
            if not isinstance(booking, dict):
                return []
            series_uid = str(booking.get("recurringBookingUid") or "")
            if not series_uid:
                return []
        data = self._get(f"/bookings/{_path_part(series_uid)}").get("data")
        occurrences = data if isinstance(data, list) else [data]
        return [b for b in occurrences if isinstance(b, dict)
                and all(isinstance(b.get(f), str) and b[f] for f in ("uid", "start", "end"))]

    def _get(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            resp = self.session.get(f"{self.settings.api_url}{path}", params=params,
                                    timeout=self.timeout)
        except requests.RequestException as exc:
            raise CalcomApiError(f"Cal.com API unreachable: {exc.__class__.__name__}") from None
        if resp.status_code == 429:
            retry = resp.headers.get("Retry-After", "")
            raise CalcomApiError("Cal.com API rate limit (429)", 429,
                                 retry_after=float(retry) if retry.isdigit() else 60.0)
        if resp.status_code != 200:
            raise CalcomApiError(f"Cal.com API answered HTTP {resp.status_code}",
                                 resp.status_code, transient=resp.status_code >= 500)
        try:
            body = resp.json()
        except ValueError:
            raise CalcomApiError("Cal.com API answered with a body that is not JSON") from None
        if not isinstance(body, dict):
            raise CalcomApiError("Cal.com API answered with a body that is not an object")
        return body


def _path_part(uid: str) -> str:
    """A booking uid as one URL path segment (uids come from webhook bodies: hostile)."""
    return quote(uid, safe="")
