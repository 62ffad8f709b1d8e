"""Issue 17 fuzz finding: a signed body whose fields have the wrong JSON type was accepted
(202) and then raised in the worker on every sweep (AttributeError: 'list' object has no
attribute 'items'), never reaching a final state. normalise now ignores wrong-typed fields."""

from __future__ import annotations

import json

import pytest

from adapters.calcom.payload import normalise, parse_body
from tests.support import fixture_bytes


@pytest.mark.parametrize("changes", [
    {"userFieldsResponses": [["dateOfBirth", "1984-03-09"]]},
    {"attendees": 7},
    {"attendees": "Jordan"},
    {"iCalUID": {"x": 1}},
    {"rescheduleUid": ["a"], "fromReschedule": 5},
])
def test_wrong_typed_fields_normalise_without_raising(changes):
    data = json.loads(fixture_bytes("04_booking_rescheduled.json"))
    data["payload"].update(changes)
    event = normalise("ev-types", parse_body(json.dumps(data).encode()), lambda uid: None)
    assert isinstance(event.appointment_key, str) and event.appointment_key
    assert event.previous_uid is None or isinstance(event.previous_uid, str)
    if "iCalUID" in changes:
        assert "{" not in event.appointment_key


@pytest.mark.parametrize("trigger", ["\ud800", "BOOKING_CREATED\n", "X" * 65, "a b"])
def test_a_trigger_that_is_not_a_name_is_422(trigger):
    """Fuzz finding: triggerEvent "\\ud800" was stored as text and answered 500."""
    from core.errors import PayloadError

    body = json.dumps({"triggerEvent": trigger, "payload": {}}).encode()
    with pytest.raises(PayloadError, match="triggerEvent") as exc:
        parse_body(body)
    assert exc.value.status == 422
