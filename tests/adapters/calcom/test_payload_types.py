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


@pytest.mark.parametrize("changes", [{"attendees": 7}, {"attendees": "Jordan"},
                                     {"uid": {"x": 1}}, {"uid": ""}])
def test_a_body_without_usable_attendees_or_uid_is_a_payload_error_naming_the_field(changes):
    """No patient to send (or no booking to key): the worker dead-letters it at ingest."""
    from core.errors import PayloadError

    data = json.loads(fixture_bytes("04_booking_rescheduled.json"))
    data["payload"].update(changes)
    with pytest.raises(PayloadError, match=f"payload.{next(iter(changes))}"):
        normalise("ev-types", parse_body(json.dumps(data).encode()), lambda uid: None)


@pytest.mark.parametrize("trigger", ["\ud800", "BOOKING_CREATED\n", "X" * 65, "a b"])
def test_a_trigger_that_is_not_a_name_is_422(trigger):
    """Fuzz finding: triggerEvent "\\ud800" was stored as text and answered 500."""
    from core.errors import PayloadError

    body = json.dumps({"triggerEvent": trigger, "payload": {}}).encode()
    with pytest.raises(PayloadError, match="triggerEvent") as exc:
        parse_body(body)
    assert exc.value.status == 422
