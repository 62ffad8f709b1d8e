"""Read an inbound SIU (the EHR booked first) into a BlockChange. Pure: no I/O, no clock.

Errors are `InboundError(ack_code, error_code, text)`: the ERR text names the segment or field
that is wrong, never a value from the message (values may be patient data).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo

from adapters.hl7v2.ack import split_segments
from adapters.hl7v2.escape import unescape
from core.blocks import BLOCK, MOVE, NONE, RELEASE, BlockChange

ACTION_BY_EVENT = {
    "S12": BLOCK, "S13": MOVE, "S14": BLOCK, "S15": RELEASE, "S16": RELEASE, "S17": RELEASE,
    "S18": NONE, "S19": NONE, "S20": NONE, "S21": NONE, "S22": NONE,
    "S23": BLOCK, "S24": RELEASE, "S26": NONE,
}
RELEASE_STATUSES = ("cancelled", "deleted", "dc", "discontinued")
_DTM = re.compile(r"^(\d{4})(\d{2})(\d{2})(?:(\d{2})(\d{2})?(\d{2})?(?:\.\d{1,4})?)?([+-]\d{4})?$")
_UNITS = {"s": 1, "sec": 1, "second": 1, "seconds": 1, "min": 60, "m": 60, "mi": 60,
          "minute": 60, "minutes": 60, "h": 3600, "hr": 3600, "hour": 3600, "hours": 3600,
          "d": 86400, "day": 86400, "days": 86400}
# where each resource segment keeps (start, duration, duration units): field numbers
_RESOURCE_TIMES = {"AIP": (6, 9, 10), "AIG": (8, 11, 12), "AIS": (4, 7, 8), "AIL": (6, 9, 10)}


MIN_YEAR, MAX_YEAR = 1900, 2999  # appointment times; outside, UTC arithmetic can overflow
MAX_DURATION_SECONDS = 366 * 86400


class InboundError(ValueError):
    """The message cannot be used. `ack_code` AE (content) or AR (reject); HL7 table 0357 code."""

    def __init__(self, ack_code: str, error_code: str, text: str) -> None:
        super().__init__(text)
        self.ack_code = ack_code
        self.error_code = error_code
        self.text = text


@dataclass(frozen=True)
class Header:
    sending_application: str
    sending_facility: str
    control_id: str
    message_type: str  # MSH-9.1
    event: str  # MSH-9.2
    enhanced: bool  # MSH-15 or MSH-16 valued: answer with CA/CE/CR


class _Message:
    def __init__(self, text: str) -> None:
        self.segments = split_segments(text)
        msh = self.segments[0] if self.segments else ""
        if not msh.startswith("MSH") or len(msh) < 8:
            raise InboundError("AR", "100", "not an HL7 message: no MSH segment")
        self.sep = msh[3]
        enc = msh.split(self.sep)[1] if self.sep in msh[4:] else "^~\\&"
        self.comp = enc[0] if enc else "^"
        self.rep = enc[1] if len(enc) > 1 else "~"

    def all(self, name: str) -> list[list[str]]:
        """Every `name` segment as a list of fields, numbered as in the standard (MSH too)."""
        out = []
        for seg in self.segments:
            if seg.startswith(name + self.sep) or seg == name:
                fields = seg.split(self.sep)
                out.append([name, self.sep, *fields[1:]] if name == "MSH" else fields)
        return out

    def first(self, name: str) -> list[str] | None:
        found = self.all(name)
        return found[0] if found else None

    def comp_of(self, value: str, index: int = 0) -> str:
        parts = value.split(self.rep)[0].split(self.comp)
        return unescape(parts[index]).strip() if len(parts) > index else ""


def _field(fields: list[str] | None, n: int) -> str:
    return fields[n] if fields is not None and len(fields) > n else ""


def parse_header(text: str) -> Header:
    return _header(_Message(text))


def _header(m: _Message) -> Header:
    msh = m.first("MSH")
    control_id = _field(msh, 10).strip()
    if not control_id:
        raise InboundError("AR", "101", "MSH-10 (message control id) is empty")
    msg_type = _field(msh, 9)
    return Header(
        sending_application=_field(msh, 3), sending_facility=_field(msh, 4),
        control_id=control_id, message_type=m.comp_of(msg_type, 0).upper(),
        event=m.comp_of(msg_type, 1).upper(),
        enhanced=bool(_field(msh, 15).strip() or _field(msh, 16).strip()),
    )


def parse_time(value: str, zone: tzinfo, name: str) -> datetime:
    """HL7 DTM to UTC. Without an offset the time is read in `zone` (the site's zone)."""
    m = _DTM.match(value.strip())
    if not m:
        raise InboundError("AE", "102", f"{name} is not an HL7 date/time (YYYYMMDDHHMM[SS][+ZZZZ])")
    year, month, day, hour, minute, second, offset = m.groups()
    try:
        wall = datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0),
                        int(second or 0), tzinfo=UTC)  # the wall-clock time; zone applied below
    except ValueError:
        raise InboundError("AE", "102", f"{name} is not a valid date/time") from None
    if not MIN_YEAR <= wall.year <= MAX_YEAR:  # never parses: AE, not "send again later"
        raise InboundError("AE", "102", f"{name} is outside the years {MIN_YEAR}-{MAX_YEAR}")
    if offset:
        sign = 1 if offset[0] == "+" else -1
        delta = timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5]))
        return wall - sign * delta
    return wall.replace(tzinfo=zone).astimezone(UTC)


def _duration(m: _Message, amount: str, units: str, name: str) -> timedelta | None:
    amount = m.comp_of(amount) if amount else ""
    if not amount:
        return None
    try:
        value = float(amount)
    except ValueError:
        raise InboundError("AE", "102", f"{name} is not a number") from None
    factor = _UNITS.get(m.comp_of(units).lower(), 60) if units else 60
    if not 0 <= value * factor <= MAX_DURATION_SECONDS:  # also NaN and infinity
        raise InboundError("AE", "102", f"{name} is not a duration up to a year")
    return timedelta(seconds=value * factor)


def _providers(m: _Message, known: Collection[str]) -> tuple[tuple[str, ...], list[list[str]]]:
    """Configured providers named in AIP-3 / AIG-3 (segments with action code D are skipped)."""
    found: list[str] = []
    segments: list[list[str]] = []
    named = False
    for name, field_no in (("AIP", 3), ("AIG", 3)):
        for seg in m.all(name):
            if _field(seg, 2).strip().upper() == "D":
                continue
            for rep in _field(seg, field_no).split(m.rep):
                ident = m.comp_of(rep, 0)
                named = named or bool(ident)
                if ident and ident in known and ident not in found:
                    found.append(ident)
                    segments.append(seg)
    if not found:
        what = "no AIP-3/AIG-3 resource is a configured provider" if named else \
            "no AIP or AIG segment names a resource"
        raise InboundError("AE", "204", what)
    return tuple(found), segments


def _times(m: _Message, resources: list[list[str]], zone: tzinfo) -> tuple[datetime, datetime]:
    tq1, sch = m.first("TQ1"), m.first("SCH")
    start_raw, end_raw = m.comp_of(_field(tq1, 7)), m.comp_of(_field(tq1, 8))
    start = parse_time(start_raw, zone, "TQ1-7") if start_raw else None
    end = parse_time(end_raw, zone, "TQ1-8") if end_raw else None
    candidates = resources + [s for name in ("AIS", "AIL") for s in m.all(name)]
    for seg in candidates:
        if start is not None and end is not None:
            break
        start_no, dur_no, unit_no = _RESOURCE_TIMES[seg[0]]
        seg_start_raw = m.comp_of(_field(seg, start_no))
        if not seg_start_raw:
            continue
        label = f"{seg[0]}-{start_no}"
        seg_start = parse_time(seg_start_raw, zone, label)
        start = start or seg_start
        length = _duration(m, _field(seg, dur_no), _field(seg, unit_no), f"{seg[0]}-{dur_no}")
        if end is None and length is not None:
            end = seg_start + length
    if start is None and m.comp_of(_field(sch, 11), 3):
        start = parse_time(m.comp_of(_field(sch, 11), 3), zone, "SCH-11.4")
    if end is None and m.comp_of(_field(sch, 11), 4):
        end = parse_time(m.comp_of(_field(sch, 11), 4), zone, "SCH-11.5")
    if start is not None and end is None:
        length = _duration(m, _field(sch, 9), _field(sch, 10), "SCH-9")
        end = start + length if length is not None else None
    if start is None or end is None:
        raise InboundError("AE", "101", "no start/end time: TQ1-7/8, AIx start and duration, "
                                        "or SCH-11 are required")
    if end <= start:
        raise InboundError("AE", "102", "the end time is not after the start time")
    return start, end


def parse_siu(text: str, known_providers: Collection[str], zone: tzinfo) -> BlockChange:
    """The block change an SIU asks for. `zone` reads times that carry no offset."""
    m = _Message(text)
    header = _header(m)
    if header.message_type != "SIU":
        raise InboundError("AR", "200", f"message type {header.message_type[:10] or '(empty)'} "
                                        "is not handled here (SIU only)")
    action = ACTION_BY_EVENT.get(header.event)
    if action is None:
        raise InboundError("AR", "201", f"SIU event {header.event[:10] or '(empty)'} is not handled")
    sch = m.first("SCH")
    if sch is None:
        raise InboundError("AE", "100", "SCH segment missing")
    if not m.all("RGS"):
        raise InboundError("AE", "100", "RGS segment missing (at least one resource group)")
    origin = f"hl7:{header.event}"
    if m.comp_of(_field(sch, 25)).lower() in RELEASE_STATUSES and action in (BLOCK, MOVE):
        action = RELEASE
    appt_id = m.comp_of(_field(sch, 2)) or m.comp_of(_field(sch, 1))
    facility = m.comp_of(header.sending_facility) or m.comp_of(header.sending_application)
    if action == NONE:
        return BlockChange(NONE, (facility, appt_id), origin=origin)
    if action == RELEASE and appt_id:
        return BlockChange(RELEASE, (facility, appt_id), origin=origin)
    providers, resources = _providers(m, known_providers)
    start, end = _times(m, resources, zone)
    if not appt_id:  # a blocked slot with no appointment id: the slot itself is the key
        appt_id = f"slot|{'|'.join(providers)}|{start.isoformat()}|{end.isoformat()}"
    return BlockChange(action, (facility, appt_id), providers, start, end, origin)


@dataclass(frozen=True)
class AppointmentRefs:
    """Who an SIU is about and what it says, for telling our own appointments apart.

    `reason` is SCH-6's text: free text from the EHR, never logged."""

    event: str  # MSH-9.2
    placer_id: str  # SCH-1.1
    placer_namespace: str  # SCH-1.2
    filler_id: str  # SCH-2.1
    filler_namespace: str  # SCH-2.2
    status: str  # SCH-25.1
    reason: str  # SCH-6.2, else SCH-6.1
    start: datetime | None
    end: datetime | None


def parse_refs(text: str, zone: tzinfo) -> AppointmentRefs:
    """The ids and the state an SIU carries. Times are None when the message has none."""
    m = _Message(text)
    header = _header(m)
    sch = m.first("SCH")
    if sch is None:
        raise InboundError("AE", "100", "SCH segment missing")
    resources = [seg for name in ("AIP", "AIG") for seg in m.all(name)
                 if _field(seg, 2).strip().upper() != "D"]
    try:
        start, end = _times(m, resources, zone)
    except InboundError:
        start = end = None
    return AppointmentRefs(
        event=header.event, placer_id=m.comp_of(_field(sch, 1)),
        placer_namespace=m.comp_of(_field(sch, 1), 1), filler_id=m.comp_of(_field(sch, 2)),
        filler_namespace=m.comp_of(_field(sch, 2), 1), status=m.comp_of(_field(sch, 25)),
        reason=m.comp_of(_field(sch, 6), 1) or m.comp_of(_field(sch, 6)), start=start, end=end)
