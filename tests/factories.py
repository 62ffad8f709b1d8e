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
    return f"{tag}{i:021d}"[:22] + "@Cal.com"


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
