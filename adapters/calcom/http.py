"""What both Cal.com API v2 clients share: the error they raise and the session they use."""

from __future__ import annotations

import requests

from core.config import CalcomSettings


class CalcomApiError(Exception):
    """Cal.com did not do what we asked. `transient`: worth trying again later;
    `retry_after`: seconds Cal.com asked us to wait (HTTP 429)."""

    def __init__(self, message: str, status: int | None = None, transient: bool = True,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.transient = transient
        self.retry_after = retry_after


def api_session(settings: CalcomSettings) -> requests.Session:
    """Bearer API key and the `cal-api-version` header the bookings endpoints need."""
    session = requests.Session()
    session.headers.update({"Authorization": f"Bearer {settings.api_key}",
                            "cal-api-version": settings.bookings_api_version})
    return session
