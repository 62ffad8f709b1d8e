"""Events from the shared Cal.com fixtures and Settings with a FHIR target, for the FHIR tests."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from adapters.calcom.payload import normalise, parse_body
from core.config import Settings
from core.models import AppointmentEvent
from tests.factories import fixture_ledger
from tests.support import FIXTURES, config_text

PATIENT_SYSTEM = "urn:oid:2.16.840.1.113883.3.7777.1"


def fixture_json(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


def event_from(data: dict[str, Any] | str, edit: Callable[[dict[str, Any]], None] | None = None,
               event_id: str = "evt-1") -> AppointmentEvent:
    """Normalise a fixture (by name) or a body, after `edit` changed a copy of it."""
    body = fixture_json(data) if isinstance(data, str) else json.loads(json.dumps(data))
    if edit:
        edit(body)
    return normalise(event_id, parse_body(json.dumps(body).encode()), fixture_ledger)


def no_show_of(base: AppointmentEvent, no_show: bool = True) -> AppointmentEvent:
    """A BOOKING_NO_SHOW_UPDATED body, merged onto its booking the way the worker does it."""
    body = {"triggerEvent": "BOOKING_NO_SHOW_UPDATED", "createdAt": "2026-10-14T16:05:00.000Z",
            "payload": {"bookingUid": base.uid, "bookingId": base.booking_id,
                        "message": "x", "attendees": [{"email": base.attendee.email,
                                                       "noShow": no_show}]}}
    raw = normalise("evt-ns", parse_body(json.dumps(body).encode()))
    return dataclasses.replace(base, event_id=raw.event_id, trigger=raw.trigger, kind=raw.kind,
                               created_at=raw.created_at, no_show=raw.no_show)


def fhir_settings(tmp_path: Path, url: str = "http://127.0.0.1:9/fhir", **target: Any) -> Settings:
    values: dict[str, Any] = {"name": "fhir", "kind": "fhir", "url": url,
                              "timezone": "America/Chicago",
                              "patient_identifier_system": PATIENT_SYSTEM, **target}
    lines = ["[[targets]]"] + [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    return Settings.from_toml(config_text(tmp_path / "outbox", extra_targets="\n".join(lines)), {})
