"""Issue 17 finding 1: no text from Cal.com can end a field, segment, frame or message.

A property test over any Unicode text (any C0 control, the MSH-2 delimiters, CR/LF, VT, FS,
NUL...) in each Cal.com field the SIU carries, for each charset a target can declare.
"""

from __future__ import annotations

import json
import re

import hl7
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.calcom.payload import normalise, parse_body
from adapters.hl7v2 import FrameSplitter, build_siu, frame
from adapters.hl7v2.charset import codec_for
from tests.adapters.hl7v2.helpers import MESSAGE_TIME, profile
from tests.support import fixture_bytes

BASE = json.loads(fixture_bytes("02_booking_created.json"))
_RAW_CONTROL = re.compile(rb"[\x00-\x0c\x0e-\x1f\x7f]")  # any C0 but the segment CR, and DEL
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def _attendee(p: dict, key: str, text: str) -> None:
    p["attendees"][0][key] = text


def _response(p: dict, key: str, text: str) -> None:
    p["responses"][key] = {"label": key, "value": text}


# field -> (put the text into the payload, where python-hl7 finds it, how it reads back)
FIELDS = {
    "lastName": (lambda p, t: _attendee(p, "lastName", t), "PID.F5.R1.C1", None),
    "firstName": (lambda p, t: _attendee(p, "firstName", t), "PID.F5.R1.C2", None),
    "email": (lambda p, t: (_attendee(p, "email", t), _response(p, "email", t)),
              "PID.F13.R2.C4", None),
    # booking-form answers are read stripped (str.strip: also VT, FS..US)
    "phone": (lambda p, t: _response(p, "attendeePhoneNumber", t), "PID.F13.R1.C1", str.strip),
    "memberId": (lambda p, t: _response(p, "insuranceMemberId", t), "PID.F3.R1.C1", str.strip),
    "uid": (lambda p, t: p.update(uid=t), "SCH.F1.R1.C1", None),  # SCH-1: the first booking uid
    "type": (lambda p, t: p.update(type=t), "AIS.F3.R1.C1", None),
    "eventTitle": (lambda p, t: p.update(type="unconfigured", eventTitle=t), "AIS.F3.R1.C2",
                   None),
    # formatted text: a line break is \.br\, which python-hl7 reads as CR (HL7 2.10.6)
    "notes": (lambda p, t: p.update(additionalNotes=t), "NTE.F3",
              lambda t: _LINE_BREAK.sub("\r", t)),
}
CHARSETS = {
    "UNICODE UTF-8": st.text(min_size=1, max_size=40),
    "8859/1": st.text(st.characters(max_codepoint=0xFF), min_size=1, max_size=40),
    "8859/15": st.text(st.characters(max_codepoint=0xFF).filter(
        lambda c: c.encode("iso8859-15", "ignore") != b""), min_size=1, max_size=40),
}
HOSTILE = ["\x0bMSH#^~\\&#EVIL#INJECTED01", "a\x1c\rb", "\x00", "x\r\nMSH|",
                           "|^~\\&", "\\X0B\\", "\x7f\x1b[2J", "\t\x0c\x1e\x1f"]


def _build(payload_changes, charset: str, prof) -> tuple[bytes, object]:
    data = json.loads(json.dumps(BASE))
    payload_changes(data["payload"])
    event = normalise("ev-prop", parse_body(json.dumps(data).encode()), lambda uid: None)
    wire = build_siu(event, prof, message_event="S12", control_id="CTRL0000000000000001",
                     message_time=MESSAGE_TIME)
    return wire, event


@pytest.fixture(scope="module")
def profiles(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prof")
    return {cs: profile(tmp, charset=f'"{cs}"', allow_notes="true") for cs in CHARSETS}


def assert_stays_in_its_field(field: str, text: str, charset: str, prof) -> None:
    put, path, read_back = FIELDS[field]
    if not text.strip() and field in ("email", "uid", "phone", "memberId"):
        text = "x" + text  # blank falls back to another field (responses.email, uid...)
    wire, event = _build(lambda p: put(p, text), charset, prof)
    expected_segments = 8 + (1 if event.notes else 0)  # MSH SCH TQ1 [NTE] PID RGS AIS AIL AIP
    assert wire.count(b"\r") == expected_segments and wire.endswith(b"\r")
    assert _RAW_CONTROL.search(wire) is None, wire
    framed = frame(wire)
    assert framed.count(b"\x0b") == 1 and framed.count(b"\x1c") == 1
    assert FrameSplitter(1 << 20).feed(framed) == [("frame", wire)]
    msg = hl7.parse(wire.decode(codec_for(charset)))
    assert len(msg) == expected_segments
    assert [str(s[0]) for s in msg][:3] == ["MSH", "SCH", "TQ1"]
    assert len(msg.segment("PID")) == 14  # no field split off by a stray delimiter
    got = str(msg[path])  # python-hl7 unescapes on access
    assert got == (read_back or (lambda t: t))(text)


@pytest.mark.parametrize("charset", list(CHARSETS))
@pytest.mark.parametrize("field", list(FIELDS))
def test_hostile_samples_stay_inside_their_field(profiles, field, charset):
    for text in HOSTILE:
        assert_stays_in_its_field(field, text, charset, profiles[charset])


@pytest.mark.parametrize("charset", list(CHARSETS))
@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_text_in_any_field_gives_one_frame_and_reads_back(profiles, charset, data):
    field = data.draw(st.sampled_from(sorted(FIELDS)), label="field")
    text = data.draw(CHARSETS[charset], label="text")
    assert_stays_in_its_field(field, text, charset, profiles[charset])
