"""A local HTTP server that answers `GET /v2/bookings` and `GET /v2/bookings/{uid}` the way Cal.com
API v2 (2024-08-13) does."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse

API_KEY = "cal_test_0123456789"


class FakeCalcom:
    def __init__(self) -> None:
        self.bookings: dict[str, dict] = {}
        self.requests: list[dict] = []
        self.rate_limit_next = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, status: int, body: dict, headers: dict | None = None) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self):  # noqa: N802
                url = urlparse(self.path)
                q = {k: v[0] for k, v in parse_qs(url.query).items()}
                outer.requests.append({"path": url.path, "query": q})
                if self.headers.get("Authorization") != f"Bearer {API_KEY}":
                    return self._send(401, {"status": "error", "error": {"code": "UNAUTHORIZED"}})
                if self.headers.get("cal-api-version") != "2024-08-13":
                    return self._send(400, {"status": "error", "error": {"code": "BAD_VERSION"}})
                if url.path.startswith("/v2/bookings/"):
                    return self._one(url.path.removeprefix("/v2/bookings/"))
                if url.path != "/v2/bookings":
                    return self._send(404, {"status": "error"})
                if outer.rate_limit_next:
                    outer.rate_limit_next -= 1
                    return self._send(429, {"status": "error"}, {"Retry-After": "2"})
                rows = sorted(outer.bookings.values(), key=lambda b: b["updatedAt"])
                if "afterUpdatedAt" in q:
                    rows = [b for b in rows if b["updatedAt"] > q["afterUpdatedAt"]]
                take, skip = int(q.get("take", 100)), int(q.get("skip", 0))
                page = rows[skip: skip + take]
                self._send(200, {"status": "success", "data": page, "pagination": {
                    "totalItems": len(rows), "returnedItems": len(page), "itemsPerPage": take,
                    "remainingItems": max(0, len(rows) - skip - len(page)),
                    "hasNextPage": skip + len(page) < len(rows),
                    "hasPreviousPage": skip > 0}})

            def _one(self, uid: str) -> None:
                """GET /v2/bookings/{bookingUid}: one booking, or, for the uid of a recurring
                series (`recurringBookingUid`), the array of all its occurrences."""
                uid = unquote(uid)
                if outer.rate_limit_next:
                    outer.rate_limit_next -= 1
                    return self._send(429, {"status": "error"}, {"Retry-After": "2"})
                if uid in outer.bookings:
                    return self._send(200, {"status": "success", "data": outer.bookings[uid]})
                series = sorted((b for b in outer.bookings.values()
                                 if b.get("recurringBookingUid") == uid), key=lambda b: b["start"])
                if series:
                    return self._send(200, {"status": "success", "data": series})
                return self._send(404, {"status": "error", "error": {"code": "NOT_FOUND"}})

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/v2"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def put(self, booking: dict) -> None:
        self.bookings[booking["uid"]] = booking

    def close(self) -> None:
        self.server.shutdown()


def api_booking(uid: str, start: str, end: str, updated: str, status: str = "accepted",
                rescheduled_from: str | None = None, name: str = "Jordan Reyes") -> dict:
    booking = {
        "id": abs(hash(uid)) % 100000, "uid": uid, "title": "New Patient Consult",
        "status": status, "start": start, "end": end, "duration": 30, "eventTypeId": 1187,
        "eventType": {"id": 1187, "slug": "new-patient-consult"},
        "location": "Lakeside Clinic, 200 E Randolph St", "createdAt": updated,
        "updatedAt": updated,
        "hosts": [{"id": 42, "name": "Dr. Amina Okafor", "username": "dr-okafor",
                   "email": "amina.okafor@example-hospital.org", "timeZone": "America/Chicago"}],
        "attendees": [{"name": name, "email": "jordan.reyes@example.com",
                       "timeZone": "America/Chicago", "language": "en", "absent": False}],
        "bookingFieldsResponses": {"name": name, "email": "jordan.reyes@example.com",
                                   "dateOfBirth": "1984-03-09",
                                   "insuranceMemberId": "XQJ-448-21907"},
    }
    if rescheduled_from:
        booking["rescheduledFromUid"] = rescheduled_from
    return booking
