"""A local HTTP server that answers Cal.com API v2 booking calls (cal-api-version 2024-08-13):
`POST /v2/bookings` and `POST /v2/bookings/{uid}/cancel`, with the documented headers and bodies."""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

API_KEY = "cal_test_blocker_0123456789"
API_VERSION = "2024-08-13"
BLOCKER_EVENT_TYPE = {"id": 5501, "slug": "ehr-hold"}


class FakeCalcomApi:
    def __init__(self, on_request: Callable[[str, dict], None] | None = None) -> None:
        self.bookings: dict[str, dict] = {}
        self.requests: list[dict] = []
        self.on_request = on_request
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, status: int, body: dict) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_POST(self):  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with outer.lock:
                    outer.requests.append({"path": self.path, "body": body,
                                           "headers": dict(self.headers)})
                if outer.on_request:
                    outer.on_request(self.path, body)
                if self.headers.get("Authorization") != f"Bearer {API_KEY}":
                    return self._send(401, {"status": "error", "error": {"code": "UNAUTHORIZED"}})
                if self.headers.get("cal-api-version") != API_VERSION:
                    return self._send(400, {"status": "error", "error": {"code": "BAD_VERSION"}})
                if self.path == "/v2/bookings":
                    return self._create(body)
                parts = self.path.strip("/").split("/")
                if len(parts) == 4 and parts[:2] == ["v2", "bookings"] and parts[3] == "cancel":
                    return self._cancel(parts[2], body)
                return self._send(404, {"status": "error", "error": {"code": "NOT_FOUND"}})

            def _create(self, body: dict) -> None:
                attendee = body.get("attendee") or {}
                by_slug = body.get("eventTypeSlug") == BLOCKER_EVENT_TYPE["slug"] and body.get("username")
                if not (by_slug or body.get("eventTypeId") == BLOCKER_EVENT_TYPE["id"]):
                    return self._send(400, {"status": "error", "error": {"code": "BAD_EVENT_TYPE"}})
                if not body.get("start") or not attendee.get("name") or not attendee.get("timeZone"):
                    return self._send(400, {"status": "error", "error": {"code": "BAD_REQUEST"}})
                start = datetime.fromisoformat(body["start"].replace("Z", "+00:00"))
                minutes = int(body.get("lengthInMinutes") or 30)
                uid = secrets.token_urlsafe(16)[:22]
                booking = {
                    "id": len(outer.bookings) + 70001, "uid": uid, "title": "EHR hold",
                    "status": "accepted", "start": body["start"],
                    "end": (start + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                    "duration": minutes, "eventTypeId": BLOCKER_EVENT_TYPE["id"],
                    "eventType": dict(BLOCKER_EVENT_TYPE),
                    "hosts": [{"id": 42, "name": "Dr. Amina Okafor", "username": body.get("username"),
                               "timeZone": "America/Chicago"}],
                    "attendees": [{"name": attendee["name"], "email": attendee.get("email"),
                                   "timeZone": attendee["timeZone"], "absent": False}],
                    "metadata": body.get("metadata") or {},
                }
                with outer.lock:
                    outer.bookings[uid] = booking
                self._send(201, {"status": "success", "data": booking})

            def _cancel(self, uid: str, body: dict) -> None:
                with outer.lock:
                    booking = outer.bookings.get(uid)
                    if booking is None:
                        return self._send(404, {"status": "error", "error": {"code": "NOT_FOUND"}})
                    booking.update(status="cancelled", cancellationReason=body.get("cancellationReason"))
                self._send(200, {"status": "success", "data": booking})

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/v2"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
