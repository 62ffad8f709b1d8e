"""build_siu: every fixture becomes a v2.5.1 SIU that hl7apy accepts in STRICT mode."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import hl7
import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

from adapters.hl7v2 import build_siu, unescape
from core.errors import MappingError
from core.models import EventKind
from tests.adapters.hl7v2.helpers import MESSAGE_TIME, event_from, profile, with_attendee

CASES = [
    ("02_booking_created.json", "S12", "Booked"),
    ("03_booking_requested.json", "S12", "Pending"),
    ("04_booking_rescheduled.json", "S13", "Booked"),
    ("05_booking_cancelled.json", "S15", "Cancelled"),
]


def strict(wire: bytes, codec: str = "utf-8"):
    msg = parse_message(wire.decode(codec), validation_level=VALIDATION_LEVEL.STRICT,
                        find_groups=True)
    assert msg.validate() is True
    return msg


def build(event, prof, message_event, control_id="CTRL0000000000000001", **kw):
    return build_siu(event, prof, message_event=message_event, control_id=control_id,
                     message_time=MESSAGE_TIME, **kw)


@pytest.mark.parametrize(("fixture", "message_event", "status"), CASES)
def test_fixture_maps_to_a_strictly_valid_siu(tmp_path, fixture, message_event, status):
    event = event_from(fixture)
    msg = strict(build(event, profile(tmp_path, timezone='"America/Chicago"'), message_event))
    assert msg.msh.msh_9.to_er7() == f"SIU^{message_event}^SIU_S12"
    assert msg.msh.msh_10.to_er7() == "CTRL0000000000000001"
    assert msg.msh.msh_12.to_er7() == "2.5.1"
    assert msg.sch.sch_1.to_er7() == f"{event.appointment_key}^CALCOM"
    assert msg.sch.sch_6.to_er7().startswith(message_event + "^")
    assert msg.sch.sch_25.to_er7().split("^")[0] == status
    pid = msg.siu_s12_patient.pid
    assert pid.pid_5.to_er7() == f"{event.attendee.last_name}^{event.attendee.first_name}"
    aip = msg.siu_s12_resources.siu_s12_personnel_resource.aip
    assert aip.aip_3.to_er7() == "OKAFOR01^Okafor^Amina^^^Dr."


def test_created_fixture_fields_in_chicago_time(tmp_path):
    msg = strict(build(event_from("02_booking_created.json"),
                       profile(tmp_path, timezone='"America/Chicago"'), "S12"))
    # 2026-10-14T15:00Z is 10:00 CDT (-0500)
    assert msg.tq1.tq1_7.to_er7() == "20261014100000-0500"
    assert msg.tq1.tq1_8.to_er7() == "20261014103000-0500"
    pid = msg.siu_s12_patient.pid
    assert pid.pid_7.to_er7() == "19840309"
    assert pid.pid_3.to_er7() == "XQJ-448-21907^^^INS^MB"
    telecom = [rep.to_er7() for rep in pid.pid_13]
    assert telecom == ["+13125550147^PRN^PH", "^NET^Internet^jordan.reyes@example.com"]
    resources = msg.siu_s12_resources
    assert resources.siu_s12_service.ais.ais_3.to_er7().startswith("NPC^")
    assert resources.siu_s12_location_resource.ail.ail_3.to_er7() == "LAKESIDE^400^^LSC"


def test_times_carry_the_right_offset_on_both_sides_of_a_dst_change(tmp_path):
    # US DST ends 2026-11-01 02:00 CDT: 06:30Z is 01:30 CDT (-0500), 07:30Z is 01:30 CST (-0600)
    event = dataclasses.replace(event_from("02_booking_created.json"),
                                start=datetime(2026, 11, 1, 6, 30, tzinfo=UTC),
                                end=datetime(2026, 11, 1, 7, 30, tzinfo=UTC))
    msg = strict(build(event, profile(tmp_path, timezone='"America/Chicago"'), "S12"))
    assert msg.tq1.tq1_7.to_er7() == "20261101013000-0500"
    assert msg.tq1.tq1_8.to_er7() == "20261101013000-0600"
    assert msg.sch.sch_9.to_er7() == "60"
    berlin = strict(build(dataclasses.replace(event, start=datetime(2026, 3, 29, 0, 30, tzinfo=UTC),
                                              end=datetime(2026, 3, 29, 1, 30, tzinfo=UTC)),
                          profile(tmp_path, timezone='"Europe/Berlin"'), "S12"))
    assert berlin.tq1.tq1_7.to_er7() == "20260329013000+0100"
    assert berlin.tq1.tq1_8.to_er7() == "20260329033000+0200"


def test_no_show_is_s26_with_noshow_status(tmp_path):
    event = dataclasses.replace(event_from("02_booking_created.json"), kind=EventKind.NO_SHOW,
                                no_show=True)
    msg = strict(build(event, profile(tmp_path), "S26"))
    assert msg.msh.msh_9.to_er7() == "SIU^S26^SIU_S12"
    assert msg.sch.sch_25.to_er7().split("^")[0] == "Noshow"


def test_upper_case_status_profile(tmp_path):
    msg = strict(build(event_from("02_booking_created.json"),
                       profile(tmp_path, status_case='"upper"'), "S12"))
    assert msg.sch.sch_25.to_er7().split("^")[0] == "BOOKED"


NASTY_FAMILY = "Müller^|&~\\Straße"
NASTY_GIVEN = "Zoë & Jörg"


@pytest.mark.parametrize(("charset", "codec"), [("UNICODE UTF-8", "utf-8"), ("8859/1", "latin-1")])
def test_delimiters_and_umlauts_round_trip(tmp_path, charset, codec):
    event = with_attendee(event_from("02_booking_created.json"), last_name=NASTY_FAMILY,
                          first_name=NASTY_GIVEN)
    wire = build(event, profile(tmp_path, charset=f'"{charset}"'), "S12")
    assert wire.decode(codec)  # the declared charset really is the encoding
    if codec == "latin-1":
        assert b"M\xfcller" in wire
    strict(wire, codec)
    parsed = hl7.parse(wire.decode(codec))
    assert str(parsed["MSH.F18"]) == charset
    assert unescape(str(parsed["PID.F5.R1.C1"])) == NASTY_FAMILY
    assert unescape(str(parsed["PID.F5.R1.C2"])) == NASTY_GIVEN
    assert len(parsed.segments("PID")[0]) == 14  # no field was split by a stray delimiter


def test_value_outside_latin1_is_a_mapping_error(tmp_path):
    event = with_attendee(event_from("02_booking_created.json"), last_name="Łukasz")
    with pytest.raises(MappingError, match="charset"):
        build(event, profile(tmp_path, charset='"8859/1"'), "S12")


def test_notes_only_when_the_profile_allows(tmp_path):
    event = dataclasses.replace(event_from("02_booking_created.json"), notes="line1\nline2 | x")
    assert b"NTE|" not in build(event, profile(tmp_path), "S12")
    wire = build(event, profile(tmp_path, allow_notes="true"), "S12")
    strict(wire)
    nte = next(seg for seg in wire.split(b"\r") if seg.startswith(b"NTE"))
    assert nte == b"NTE|1|P|line1\\.br\\line2 \\F\\ x"
    assert unescape(nte.decode().split("|")[3]) == "line1\nline2 | x"


def test_unknown_provider_and_bad_inputs_are_mapping_errors_without_phi(tmp_path):
    prof = profile(tmp_path)
    event = event_from("02_booking_created.json")
    stranger = dataclasses.replace(event, organizer=dataclasses.replace(
        event.organizer, username="x", email="someone@example.org"))
    with pytest.raises(MappingError, match="provider") as exc:
        build(stranger, prof, "S12")
    assert "someone" not in str(exc.value)
    bad_dob = dataclasses.replace(event, responses={**event.responses, "dateOfBirth": "31/02/x"})
    with pytest.raises(MappingError, match="date of birth") as exc:
        build(bad_dob, prof, "S12")
    assert "31/02" not in str(exc.value)
    with pytest.raises(MappingError, match="control id"):
        build(event, prof, "S12", control_id="X" * 21)
    with pytest.raises(MappingError):
        build(event, prof, "S99")


def test_message_is_deterministic_for_one_delivery(tmp_path):
    event, prof = event_from("04_booking_rescheduled.json"), profile(tmp_path)
    assert build(event, prof, "S13") == build(event, prof, "S13")


def test_placer_id_is_stable_across_reschedule_and_cancel(tmp_path):
    prof = profile(tmp_path)
    placers = {
        str(hl7.parse(build(event_from(f), prof, ev).decode())["SCH.F1.R1.C1"])
        for f, ev, _ in CASES if not f.startswith("03")
    }
    assert placers == {"7xQm2kVd9RbTn4FgHs1LpA"}


def test_message_time_is_in_target_zone():
    from zoneinfo import ZoneInfo

    from adapters.hl7v2 import hl7_time

    assert hl7_time(datetime(2026, 1, 5, 12, 0, tzinfo=UTC), ZoneInfo("Europe/Berlin")) == \
        "20260105130000+0100"


def test_meeting_ended_builds_a_strictly_valid_s14_complete(tmp_path):
    from adapters.calcom.payload import normalise, parse_body
    from tests.factories import meeting_ended_body

    event = normalise("ev-me", parse_body(meeting_ended_body()))
    assert event.kind is EventKind.MEETING_ENDED
    msg = strict(build(event, profile(tmp_path, timezone='"America/Chicago"'), "S14"))
    assert msg.msh.msh_9.to_er7() == "SIU^S14^SIU_S12"
    assert msg.sch.sch_25.to_er7().split("^")[0] == "Complete"
    assert msg.sch.sch_1.to_er7() == "7xQm2kVd9RbTn4FgHs1LpA^CALCOM"
    assert msg.tq1.tq1_7.to_er7() == "20261014100000-0500"


def test_filler_id_and_enhanced_ack_fields_stay_strictly_valid(tmp_path):
    prof = profile(tmp_path, ack_mode='"enhanced"', application_ack_type='"NE"')
    msg = strict(build(event_from("04_booking_rescheduled.json"), prof, "S13",
                       filler_id=("E-7781|x", "EHR")))
    assert msg.sch.sch_2.to_er7() == "E-7781\\F\\x^EHR"  # escaped like every value
    assert (msg.msh.msh_15.to_er7(), msg.msh.msh_16.to_er7()) == ("AL", "NE")
    parsed = hl7.parse(build(event_from("04_booking_rescheduled.json"), prof, "S13",
                             filler_id=("E-7781|x", "EHR")).decode())
    assert unescape(str(parsed.segment("SCH")[2][0][0])) == "E-7781|x"
def test_booking_title_is_never_a_code_or_label(tmp_path):
    """Issue 17 finding 3: the title names doctor and patient; AIS-3 must not carry it."""
    title = "Consult between Dr. Amina Okafor and Zelda Quartermaine"
    for changes in ({"eventTitle": None, "title": title, "type": "walk-in"},
                    {"eventTitle": "", "title": title, "type": None},
                    {"eventTitle": None, "title": title}):
        wire = build(event_from("02_booking_created.json", **changes), profile(tmp_path), "S12")
        assert b"Quartermaine" not in wire and b"between" not in wire
        strict(wire)
    unconfigured = build(event_from("02_booking_created.json", eventTitle=None, title=title,
                                    type="walk-in"), profile(tmp_path), "S12")
    ais = next(s for s in unconfigured.split(b"\r") if s.startswith(b"AIS"))
    assert ais.split(b"|")[3] == b"walk-in^walk-in^99CALCOM"
