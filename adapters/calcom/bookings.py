"""Cal.com API v2 `GET /v2/bookings`, paged by `take`/`skip`, sorted by `updatedAt` ascending."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

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
            try:
                resp = self.session.get(f"{self.settings.api_url}/bookings", params=params,
                                        timeout=self.timeout)
            except requests.RequestException as exc:
                raise CalcomApiError(f"Cal.com API unreachable: {exc.__class__.__name__}") from None
            if resp.status_code == 429:
                retry = resp.headers.get("Retry-After", "")
                raise CalcomApiError("Cal.com API rate limit (429)", 429,
                                     retry_after=float(retry) if retry.isdigit() else 60.0)
            if resp.status_code != 200:
                raise CalcomApiError(f"Cal.com API answered HTTP {resp.status_code}",
                                     resp.status_code)
            body = resp.json()
            data = body.get("data") if isinstance(body, dict) else None
            if not isinstance(data, list):
                raise CalcomApiError("Cal.com API page has no data list")
            yield from data
            pagination = body.get("pagination") or {}
            if not pagination.get("hasNextPage") or len(data) < PAGE_SIZE:
                return
