"""Reading inbound SIU into block changes: pure, no sockets."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from adapters.hl7v2.inbound import InboundError, parse_header, parse_siu
from core.blocks import block_uid
from core.config import Settings
from tests.adapters.hl7v2.inbound_samples import siu
from tests.support import FUTURE_YEAR as YEAR
from tests.support import config_text
from worker.hl7_inbound import site_zone

CHICAGO = ZoneInfo("America/Chicago")
KNOWN = {"OKAFOR01", "LEE02"}


def parse(message: bytes, zone: ZoneInfo = CHICAGO):
    return parse_siu(message.decode(), KNOWN, zone)


def test_s12_blocks_with_local_time_read_in_the_site_zone():
    change = parse(siu("S12", start=f"{YEAR}0114090000", end=f"{YEAR}0114093000"))
    assert change.action == "block"
    assert change.providers == ("OKAFOR01",)
    assert change.external_key == ("HOSPITAL", "EHR-APPT-1")
    assert change.uid == block_uid("HOSPITAL", "EHR-APPT-1")
    assert change.start == datetime(YEAR, 1, 14, 15, 0, tzinfo=UTC)  # CST, UTC-6
    assert change.end == datetime(YEAR, 1, 14, 15, 30, tzinfo=UTC)
    summer = parse(siu("S12", start=f"{YEAR}0701090000", end=f"{YEAR}0701093000"))
    assert summer.start == datetime(YEAR, 7, 1, 14, 0, tzinfo=UTC)  # CDT, UTC-5


def test_times_with_an_offset_ignore_the_site_zone():
    change = parse(siu("S12", start=f"{YEAR}0114100000+0100", end=f"{YEAR}01141045+0100"))
    assert change.start == datetime(YEAR, 1, 14, 9, 0, tzinfo=UTC)
    assert change.end == datetime(YEAR, 1, 14, 9, 45, tzinfo=UTC)


@pytest.mark.parametrize(("event", "status", "action"), [
    ("S12", "Booked", "block"), ("S13", "Booked", "move"), ("S14", "Booked", "block"),
    ("S15", "Cancelled", "release"), ("S16", "Dc", "release"), ("S17", "Deleted", "release"),
    ("S14", "Cancelled", "release"), ("S26", "Noshow", "none"), ("S18", "Booked", "none"),
])
def test_events_map_to_actions(event, status, action):
    change = parse(siu(event, status=status))
    assert change.action == action
    assert change.uid == block_uid("HOSPITAL", "EHR-APPT-1")
    assert change.origin == f"hl7:{event}"


def test_blocked_slot_without_patient_or_appointment_id_is_keyed_by_the_slot():
    blocked = parse(siu("S23", appt_id="", patient=False, status="Blocked"))
    opened = parse(siu("S24", appt_id="", patient=False, status="Blocked"))
    assert blocked.action == "block" and opened.action == "release"
    assert blocked.uid == opened.uid
    assert opened.providers == ("OKAFOR01",)


def test_times_from_resource_segments_when_there_is_no_tq1():
    change = parse(siu("S12", tq1=False))
    assert change.start == datetime(YEAR, 1, 14, 15, 0, tzinfo=UTC)
    assert change.end == datetime(YEAR, 1, 14, 15, 30, tzinfo=UTC)


def test_general_resource_calendar_with_duration_in_seconds():
    text = siu("S12", tq1=False).decode()
    segments = [s for s in text.split("\r") if s and not s.startswith(("AIP", "AIS"))]
    segments.append(f"AIG|1|A|LEE02^Lee Calendar^99ORBIS|CAL^Calendar||||{YEAR}0114091500+0000|||2700|s")
    change = parse(("\r".join(segments) + "\r").encode())
    assert change.providers == ("LEE02",)
    assert change.start == datetime(YEAR, 1, 14, 9, 15, tzinfo=UTC)
    assert change.end == datetime(YEAR, 1, 14, 10, 0, tzinfo=UTC)


def test_sch11_timing_is_the_last_resort():
    text = siu("S12", tq1=False).decode()
    segments = [s for s in text.split("\r") if s and not s.startswith("AIS")]
    segments = [s if not s.startswith("AIP") else "AIP|1|A|OKAFOR01^Okafor" for s in segments]
    change = parse(("\r".join(segments) + "\r").encode())
    assert change.start == datetime(YEAR, 1, 14, 15, 0, tzinfo=UTC)


def test_several_providers_and_removed_resources():
    message = siu("S12").decode().rstrip("\r") + "\rAIP|2|A|LEE02^Lee|D^Doctor\rAIP|3|D|OTHER9^X\r"
    assert parse(message.encode()).providers == ("OKAFOR01", "LEE02")
    dropped = message.replace("AIP|1|A|OKAFOR01", "AIP|1|D|OKAFOR01")
    assert parse(dropped.encode()).providers == ("LEE02",)


@pytest.mark.parametrize(("message", "ack", "code", "words"), [
    (b"garbage", "AR", "100", "no MSH"),
    (siu(control_id=""), "AR", "101", "MSH-10"),
    (siu().replace(b"SIU^S12^SIU_S12", b"ORU^R01^ORU_R01"), "AR", "200", "SIU only"),
    (siu("S25"), "AR", "201", "S25"),
    (siu(provider="STRANGER"), "AE", "204", "configured provider"),
    (siu(start=f"{YEAR}-01-14 09:00"), "AE", "102", "TQ1-7"),
    (siu(start=f"{YEAR}0114100000", end=f"{YEAR}0114090000"), "AE", "102", "not after"),
    (b"\r".join(s for s in siu().split(b"\r") if not s.startswith(b"RGS")), "AE", "100", "RGS"),
])
def test_errors_say_what_is_wrong(message, ack, code, words):
    with pytest.raises(InboundError) as caught:
        parse(message)
    assert (caught.value.ack_code, caught.value.error_code) == (ack, code)
    assert words in caught.value.text


def test_missing_times_are_an_application_error():
    text = siu("S12", tq1=False).decode()
    segments = [s for s in text.split("\r") if s and not s.startswith(("AIS", "AIP", "SCH"))]
    segments.insert(1, "SCH||X-1^ORBIS")
    segments.append("AIP|1|A|OKAFOR01^Okafor")
    with pytest.raises(InboundError) as caught:
        parse(("\r".join(segments) + "\r").encode())
    assert caught.value.error_code == "101"


def test_header_enhanced_mode_and_site_zone(tmp_path):
    assert parse_header(siu(enhanced=True).decode()).enhanced
    assert not parse_header(siu().decode()).enhanced
    settings = Settings.from_toml(config_text(tmp_path / "outbox"), {})
    assert site_zone(settings, parse_header(siu(facility="HOSPITAL").decode())).key == "America/Chicago"
    assert site_zone(settings, parse_header(siu(facility="ELSEWHERE").decode())).key == "America/Chicago"
    two = config_text(tmp_path / "outbox", extra_targets=(
        '[[targets]]\nname = "b"\nkind = "file"\npath = "x"\ntimezone = "Europe/Berlin"\n'
        'receiving_facility = "KLINIK"\n'))
    settings = Settings.from_toml(two, {})
    assert site_zone(settings, parse_header(siu(facility="KLINIK").decode())).key == "Europe/Berlin"
    assert site_zone(settings, parse_header(siu(facility="ELSEWHERE").decode())).key == "UTC"
