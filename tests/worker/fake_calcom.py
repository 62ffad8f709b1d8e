"""A local HTTP server that answers the way Cal.com API v2 (2024-08-13) documents: `GET /v2/bookings`,
`GET /v2/bookings/{uid}`, and `POST /v2/bookings/{uid}/reschedule | cancel | mark-absent`."""

from __future__ import annotations

import contextlib
import json
import re
import threading
import uuid
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse

API_KEY = "cal_test_0123456789"


class FakeCalcom:
    def __init__(self) -> None:
        self.bookings: dict[str, dict] = {}
        self.requests: list[dict] = []
        self.rate_limit_next = 0
        self.retry_after_seconds = 120  # long enough that no test races it; tests clear it
        self.fail_next: list[int] = []  # statuses to answer the next POSTs with
        self.slow_next: list[threading.Event] = []  # next POSTs: done, answered once it is set
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
                    return self._send(429, {"status": "error"}, {"Retry-After": str(outer.retry_after_seconds)})
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

            def do_POST(self):  # noqa: N802
                url = urlparse(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except ValueError:
                    return self._send(400, {"status": "error", "error": {"code": "BAD_JSON"}})
                outer.requests.append({"path": url.path, "method": "POST", "body": body})
                if self.headers.get("Authorization") != f"Bearer {API_KEY}":
                    return self._send(401, {"status": "error", "error": {"code": "UNAUTHORIZED"}})
                if self.headers.get("cal-api-version") != "2024-08-13":
                    return self._send(400, {"status": "error", "error": {"code": "BAD_VERSION"}})
                if outer.fail_next:
                    return self._send(outer.fail_next.pop(0), {"status": "error"})
                m = re.fullmatch(r"/v2/bookings/([^/]+)/(reschedule|cancel|mark-absent)", url.path)
                if not m:
                    return self._send(404, {"status": "error"})
                status, data = outer.act(m.group(1), m.group(2), body)
                if outer.slow_next:  # applied, but the answer waits (a client timeout)
                    outer.slow_next.pop(0).wait(30)
                    with contextlib.suppress(OSError):  # the client may have gone
                        self._send(status, {"status": "success", "data": data})
                    return None
                self._send(status, {"status": "success" if status < 300 else "error", "data": data})

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

    def act(self, uid: str, action: str, body: dict) -> tuple[int, dict]:
        """What Cal.com does for one booking action (validation as its input classes do)."""
        booking = self.bookings.get(uid)
        if booking is None:
            return 404, {"message": f"Booking with uid={uid} not found"}
        if booking["status"] == "cancelled" and action != "mark-absent":
            return 400, {"message": "Booking is already cancelled"}
        if action == "cancel":
            booking.update(status="cancelled",
                           cancellationReason=body.get("cancellationReason", ""))
            return 200, booking
        if action == "mark-absent":
            attendees = body.get("attendees")
            if body.get("host") is None and not attendees:
                return 400, {"message": "host or attendees required"}
            for item in attendees or []:
                if not isinstance(item, dict) or "@" not in str(item.get("email")) \
                        or not isinstance(item.get("absent"), bool):
                    return 400, {"message": "attendees must be {email, absent}"}
                for person in booking["attendees"]:
                    if person["email"] == item["email"]:
                        person["absent"] = item["absent"]
            return 200, booking
        try:
            start = datetime.fromisoformat(str(body["start"]).replace("Z", "+00:00"))
        except (KeyError, ValueError):
            return 400, {"message": "start must be an ISO 8601 date"}
        length = timedelta(minutes=booking.get("duration", 30))
        new_uid = uuid.uuid4().hex[:22]
        booking.update(status="cancelled", rescheduled=True, rescheduledToUid=new_uid)
        moved = json.loads(json.dumps(booking))
        moved.update(uid=new_uid, status="accepted", rescheduled=False,
                     rescheduledFromUid=uid, start=_z(start), end=_z(start + length),
                     reschedulingReason=body.get("reschedulingReason", ""))
        moved.pop("rescheduledToUid", None)
        self.bookings[new_uid] = moved
        return 201, moved

    def posts(self) -> list[dict]:
        return [r for r in self.requests if r.get("method") == "POST"]

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


def _z(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.000Z")
