"""Which SIU event each change becomes, and which targets take a MEETING_ENDED."""

from __future__ import annotations

from pathlib import Path

from adapters.calcom.payload import normalise, parse_body
from core.config import Settings
from tests.adapters.hl7v2.helpers import event_from
from tests.factories import meeting_ended_body
from tests.support import config_text
from worker.rules import message_event_for, opted_in

EXTRA = """
[[targets]]
name = "ehr"
kind = "mllp"
port = 6661
send_meeting_ended = true
"""


def test_meeting_ended_goes_only_to_targets_that_opt_in(tmp_path: Path):
    settings = Settings.from_toml(config_text(tmp_path, extra_targets=EXTRA), {})
    ended = normalise("ev-me", parse_body(meeting_ended_body()))
    assert message_event_for(ended, "created") == "S14"
    assert opted_in(ended, ["files", "ehr"], settings) == ["ehr"]
    assert opted_in(ended, ["files"], settings) == []
    created = event_from("02_booking_created.json")
    assert opted_in(created, ["files", "ehr"], settings) == ["files", "ehr"]


def test_flat_meeting_ended_is_dated_at_its_end_not_the_booking_creation():
    ended = normalise("ev-me", parse_body(meeting_ended_body()))
    assert ended.created_at == ended.end  # the row's createdAt (2026-10-07) is the booking's
