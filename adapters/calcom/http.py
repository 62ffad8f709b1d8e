"""What the Cal.com API v2 clients share: the error they raise, the session they use, and how
a POST and its answer are read."""

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


def post_data(session: requests.Session, settings: CalcomSettings, path: str,
              body: dict[str, object], timeout: float) -> object:
    """POST to API v2 and return the answer's `data`, or raise CalcomApiError."""
    try:
        resp = session.post(f"{settings.api_url}{path}", json=body, timeout=timeout)
    except requests.RequestException as exc:
        raise CalcomApiError(f"Cal.com API unreachable: {exc.__class__.__name__}") from None
    return answer_data(resp)


def answer_data(resp: requests.Response) -> object:
    """The `data` of a 200/201 answer; any other answer is a CalcomApiError (5xx/408/429 transient)."""
    if resp.status_code in (200, 201):
        try:
            return resp.json().get("data")
        except (ValueError, AttributeError):
            raise CalcomApiError("Cal.com API answer is not JSON", resp.status_code) from None
    transient = resp.status_code >= 500 or resp.status_code in (408, 429)
    raise CalcomApiError(f"Cal.com API answered HTTP {resp.status_code}", resp.status_code,
                         transient)
