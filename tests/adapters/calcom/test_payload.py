"""Normalising the bodies Cal.com's own code makes: keys, notes, sequences, no-shows, series."""

from __future__ import annotations

import json

import pytest

from adapters.calcom.payload import normalise, parse_body
from core.errors import PayloadError
from core.models import UNKNOWN_SEQUENCE, AppointmentEvent, EventKind
from tests.support import fixture_bytes

STORIES = {  # one booking's bodies in Cal.com's order -> its appointment key
    "b8nxY3NhrSVA36YRNA8SpK": ["BOOKING_CREATED.json", "BOOKING_RESCHEDULED.json",
                               "BOOKING_CANCELLED.json"],
    "2XnMqTQJuZoNWSEdH9gyXV": ["BOOKING_REQUESTED.json", "BOOKING_REJECTED.json"],
    "qnGnk2ny5q43bExHjgVgdy": ["BOOKING_REQUESTED--confirm-flow.json",
                               "BOOKING_CREATED--after-confirmation.json",
                               "BOOKING_NO_SHOW_UPDATED.json"],
    "3dmiFVFBJGQBimsVTtnNFu": ["BOOKING_CREATED--paid.json", "BOOKING_CANCELLED--paid.json"],
    "m3x55KsT8qx2SK2HFDi4zV": ["BOOKING_CREATED--video.json",
                               "AFTER_GUESTS_CAL_VIDEO_NO_SHOW.json"],
}


def event(name: str, ledger: dict[str, str] | None = None, **changes: object) -> AppointmentEvent:
    raw = fixture_bytes(name)
    if changes:
        data = json.loads(raw)
        data["payload"].update(changes)
        raw = json.dumps(data).encode()
    return normalise("ev-test", parse_body(raw), (ledger or {}).get)


def remember(ledger: dict[str, str], e: AppointmentEvent) -> None:
    """What the ledger records on accept."""
    ledger[e.uid] = e.appointment_key
    if e.previous_uid:
        ledger[e.previous_uid] = e.appointment_key


@pytest.mark.parametrize("key", list(STORIES))
def test_a_booking_keeps_one_key_in_order_and_reversed(key: str):
    ledger: dict[str, str] = {}
    for name in STORIES[key]:
        e = event(name, ledger)
        assert e.appointment_key == key, name
        remember(ledger, e)
    # with an empty ledger (bodies arriving first) each body that can be keyed alone gets the key
    alone = [event(name).appointment_key for name in reversed(STORIES[key])]
    assert set(alone) == {key}


def test_the_ledger_decides_first_so_icaluid_keys_of_older_ledgers_stay():
    legacy = {"b8nxY3NhrSVA36YRNA8SpK": "b8nxY3NhrSVA36YRNA8SpK@Cal.diy"}
    moved = event("BOOKING_RESCHEDULED.json", legacy)
    assert moved.appointment_key == "b8nxY3NhrSVA36YRNA8SpK@Cal.diy"
    remember(legacy, moved)
    assert event("BOOKING_CANCELLED.json", legacy).appointment_key == moved.appointment_key


def test_icaluid_is_an_attribute_and_may_be_missing():
    assert event("BOOKING_CANCELLED--paid.json").ical_uid == "3dmiFVFBJGQBimsVTtnNFu@Cal.diy"
    assert event("BOOKING_CREATED--paid.json").ical_uid == ""
    seated = event("BOOKING_CREATED--seated.json")
    assert seated.appointment_key == "6wiopixSVJcQ8cHgd6ahBy" != seated.ical_uid.split("@")[0]


def test_a_body_without_icalsequence_has_an_unknown_sequence():
    assert event("BOOKING_CREATED--after-confirmation.json").sequence == UNKNOWN_SEQUENCE
    assert event("BOOKING_REJECTED.json").sequence == UNKNOWN_SEQUENCE
    assert event("BOOKING_RESCHEDULED.json").sequence == 1
    assert event("BOOKING_CREATED.json", iCalSequence=True).sequence == UNKNOWN_SEQUENCE
    assert event("BOOKING_CREATED.json", iCalSequence="2").sequence == UNKNOWN_SEQUENCE


def test_notes_are_what_the_booker_wrote_never_the_event_type_description():
    assert event("BOOKING_CREATED--seated.json").notes == ""  # description is the type's
    assert event("BOOKING_CREATED.json").notes == "Bitte MRT-Befund\\CD mitbringen"
    assert event("BOOKING_CREATED--after-confirmation.json").notes == \
        "Bitte MRT-Befund\\CD mitbringen"
    paid = event("BOOKING_CREATED--paid.json")  # no additionalNotes: the `notes` response
    assert paid.notes == "Bitte MRT-Befund\\CD mitbringen"
    assert event("BOOKING_CREATED.json", additionalNotes="",
                 responses={"notes": {"label": "additional_notes", "value": ""}}).notes == ""


def test_cal_video_no_shows():
    guests = event("AFTER_GUESTS_CAL_VIDEO_NO_SHOW.json")
    assert (guests.kind, guests.uid, guests.no_show) == (EventKind.NO_SHOW,
                                                         "m3x55KsT8qx2SK2HFDi4zV", True)
    hosts = parse_body(fixture_bytes("AFTER_HOSTS_CAL_VIDEO_NO_SHOW.json"))
    assert not hosts.handled  # recorded as ignored: a host no-show is not a patient no-show
    with pytest.raises(PayloadError, match="bookingUid"):
        parse_body(json.dumps({"triggerEvent": "AFTER_GUESTS_CAL_VIDEO_NO_SHOW",
                               "createdAt": "2026-12-15T14:05:00.000Z",
                               "payload": {"attendees": []}}).encode())


def test_series_membership():
    assert event("BOOKING_CREATED--recurring-2.json").recurring is True
    assert event("BOOKING_CANCELLED--series-following.json").recurring is False  # says nothing
    meeting = normalise("ev", parse_body(fixture_bytes("MEETING_ENDED.json")))
    assert meeting.series_uid == "8a9c805b-60fa-4031-9eef-728ae72ceceb"
    assert event("BOOKING_CREATED.json").recurring is False


@pytest.mark.parametrize("hostile", [{"x": 1}, ["a"], 7])
def test_hostile_chain_fields_do_not_break_keying(hostile: object):
    e = event("BOOKING_RESCHEDULED.json", rootBookingUid=hostile, rescheduleUid=hostile)
    assert e.appointment_key in ("d8zaFygnhmY3gmr9Xcv3n9", "7")


@pytest.mark.parametrize("empty", [None, ""])
def test_a_reschedule_naming_no_chain_at_all_is_refused(empty: object):
    with pytest.raises(PayloadError, match="payload.rescheduleUid") as err:
        event("BOOKING_RESCHEDULED.json", rootBookingUid=empty, rescheduleUid=empty)
    assert err.value.status == 422


def test_a_body_sharing_only_the_root_finds_the_booking_through_it():
    legacy = {"b8nxY3NhrSVA36YRNA8SpK": "b8nxY3NhrSVA36YRNA8SpK@Cal.diy"}
    moved = event("BOOKING_RESCHEDULED.json", legacy, rescheduleUid=None)
    assert moved.previous_uid is None
    assert moved.appointment_key == "b8nxY3NhrSVA36YRNA8SpK@Cal.diy"
    assert event("BOOKING_RESCHEDULED.json", rescheduleUid=None).appointment_key == \
        "b8nxY3NhrSVA36YRNA8SpK"


def test_the_patient_is_the_booker_not_the_co_host_listed_in_a_team_cancel():
    data = json.loads(fixture_bytes("BOOKING_CANCELLED.json"))
    attendees = data["payload"]["attendees"]
    assert [a["email"] for a in attendees][1] == "oemer.celik@praxis-nord.example"
    for order in (attendees, list(reversed(attendees))):
        e = event("BOOKING_CANCELLED.json", attendees=order)
        assert e.attendee.email == "j.oeztuerk-baecker@example.de"
    # no booker e-mail in the responses: the first attendee who is not staff
    e = event("BOOKING_CREATED.json", responses={}, attendees=[
        {"name": "Dr. Ömer Çelik", "email": "oemer.celik@praxis-nord.example"},
        {"name": "Jürgen Öztürk-Bäcker & Sohn", "email": "j.oeztuerk-baecker@example.de"}])
    assert e.attendee.email == "j.oeztuerk-baecker@example.de"


def test_cal_video_guest_no_show_without_attendee_flags_is_still_a_no_show():
    assert event("AFTER_GUESTS_CAL_VIDEO_NO_SHOW.json", attendees=[]).no_show is True
    flagged_false = [{"email": "j.oeztuerk-baecker@example.de", "noShow": False}]
    assert event("BOOKING_NO_SHOW_UPDATED.json", attendees=flagged_false).no_show is False
