"""Events and profiles for the HL7 adapter tests, made from the shared fixtures."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime

from adapters.calcom.payload import normalise, parse_body
from adapters.hl7v2 import SiuProfile
from core.config import Settings
from core.models import AppointmentEvent
from tests.factories import fixture_ledger
from tests.support import config_text, fixture_bytes

MESSAGE_TIME = datetime(2026, 10, 1, 12, 0, tzinfo=UTC)


def event_from(name: str, **payload_changes: object) -> AppointmentEvent:
    body = fixture_bytes(name)
    if payload_changes:
        data = json.loads(body)
        data["payload"].update(payload_changes)
        body = json.dumps(data).encode()
    return normalise("ev-" + name[:2], parse_body(body), fixture_ledger)


def profile(tmp_path, **target: str) -> SiuProfile:
    extra = "\n".join(f"{k} = {v}" for k, v in target.items())
    text = config_text(tmp_path / "outbox") + f"""
[[targets]]
name = "siu"
kind = "mllp"
port = 6661
{extra}
"""
    return SiuProfile.from_settings(Settings.from_toml(text, {}), "siu")


def with_attendee(event: AppointmentEvent, **changes: str) -> AppointmentEvent:
    return dataclasses.replace(event, attendee=dataclasses.replace(event.attendee, **changes))
