"""Synthetic Cal.com bodies made from the shared fixtures (same shape, other ids)."""

from __future__ import annotations

import json
from pathlib import Path

import hl7

from tests.support import fixture_bytes

CREATED_UID = b"7xQm2kVd9RbTn4FgHs1LpA"
MOVED_UID = b"Q3pW8nZk1sYc5VdTe7HbMu"


def appointment_bodies(i: int, tag: str = "A") -> dict[str, bytes]:
    """created / rescheduled / cancelled bodies for appointment number i."""
    first = f"{tag}{i:021d}"[:22].encode()
    second = f"{tag}R{i:020d}"[:22].encode()
    out = {}
    for kind, name in (("created", "02_booking_created.json"),
                       ("rescheduled", "04_booking_rescheduled.json"),
                       ("cancelled", "05_booking_cancelled.json")):
        body = fixture_bytes(name).replace(CREATED_UID, first).replace(MOVED_UID, second)
        out[kind] = body
    return out


def with_changes(body: bytes, **payload_changes: object) -> bytes:
    data = json.loads(body)
    data["payload"].update(payload_changes)
    return json.dumps(data, separators=(",", ":")).encode()


def placer_of(i: int, tag: str = "A") -> str:
    return f"{tag}{i:021d}"[:22]  # the first booking uid: the appointment key


def sim_messages(out_dir: Path) -> list[dict]:
    """What the EHR simulator received, in arrival order."""
    found = []
    for path in sorted(out_dir.glob("*.hl7")):
        raw = path.read_bytes().decode("utf-8")
        msg = hl7.parse(raw.replace("\n", "\r"))
        found.append({
            "file": path.name,
            "control_id": str(msg["MSH.F10"]),
            "event": str(msg["MSH.F9.R1.C2"]),
            "placer": str(msg["SCH.F1.R1.C1"]),
            "raw": raw,
        })
    return found


def meeting_ended_body(name: str = "02_booking_created.json") -> bytes:
    """The flat Booking row that Cal.com's scheduled-trigger cron sends for MEETING_ENDED
    (reference/calcom.md 1.3 and 2.1): `triggerEvent` at the root, no `payload` wrapper,
    `createdAt` is the booking's creation, `user` instead of `organizer`."""
    p = json.loads(fixture_bytes(name))["payload"]
    org = p["organizer"]
    row = {
        "triggerEvent": "MEETING_ENDED", "id": p["bookingId"], "uid": p["uid"],
        "idempotencyKey": None, "userId": 4711, "userPrimaryEmail": org["email"],
        "eventTypeId": p["eventTypeId"], "title": p["title"], "description": p["description"],
        "responses": p["responses"], "startTime": p["startTime"].replace("Z", ".000Z"),
        "endTime": p["endTime"].replace("Z", ".000Z"), "location": p["location"],
        "createdAt": "2026-10-07T16:41:12.000Z", "updatedAt": "2026-10-07T16:41:12.000Z",
        "status": "ACCEPTED", "paid": False, "cancellationReason": None,
        "rejectionReason": None, "rescheduled": None, "fromReschedule": None,
        "recurringEventId": None, "metadata": p["metadata"], "iCalUID": p["iCalUID"],
        "iCalSequence": p["iCalSequence"], "noShowHost": False, "cancelledBy": None,
        "rescheduledBy": None, "creationSource": "WEBAPP",
        "user": {"email": org["email"], "name": org["name"], "timeZone": org["timeZone"],
                 "username": org["username"]},
        "attendees": [{"id": 1, "email": a["email"], "name": a["name"],
                       "timeZone": a["timeZone"], "phoneNumber": a.get("phoneNumber"),
                       "locale": "en", "bookingId": p["bookingId"], "noShow": False}
                      for a in p["attendees"]],
        "payment": [], "references": [], "appsStatus": None,
    }
    return json.dumps(row, separators=(",", ":")).encode()


def fixture_ledger(uid: str) -> str | None:
    """What the ledger knows after the 02 and 04 fixtures: the moved booking's uid resolves to
    the first booking's key (adapter tests normalise bodies without a worker)."""
    return CREATED_UID.decode() if uid.encode() in (CREATED_UID, MOVED_UID) else None


def praxis_nord(outbox: Path) -> str:
    """Config lines for the bodies made by Cal.com's own code (tests/fixtures/calcom/README.md):
    their provider, event types and location, and a file target "praxis" that sends notes."""
    types = [("erstgespraech", "EG"), ("kontrolltermin", "KT"), ("physio-serie", "PS"),
             ("gruppenschulung", "GS"), ("privatsprechstunde", "PV"), ("videosprechstunde", "VS")]
    lines = ['[[providers]]\ncalcom_user = "dr-weiss"\nehr_id = "WEISS01"\n'
             'name = "Weiss^Helga^^^Dr."\nics_token = "tok-weiss"\n']
    lines += [f'[[event_types]]\nslug = "{slug}"\ncode = "{code}"\nname = "{slug}"\n'
              for slug, code in types]
    lines.append('[[locations]]\nmatch = "Praxis Nord"\ncode = "NORD^1^^PN"\nname = "Praxis Nord"\n')
    lines.append(f'[[targets]]\nname = "praxis"\nkind = "file"\npath = "{outbox}"\n'
                 'timezone = "Europe/Berlin"\nallow_notes = true\n')
    return "\n".join(lines)
