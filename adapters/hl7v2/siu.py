"""Build SIU^S12..S26 (v2.5.1) from an AppointmentEvent. Pure: no I/O, no clock."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from adapters.hl7v2.charset import codec_for
from adapters.hl7v2.escape import components, escape, escape_text
from adapters.hl7v2.profile import SiuProfile
from core.errors import MappingError
from core.lookup import find_event_type, find_location, find_provider
from core.models import AppointmentEvent, EventKind

MAX_CONTROL_ID = 20
EVENT_REASONS = {
    "S12": "New appointment booking", "S13": "Appointment rescheduled",
    "S14": "Appointment modified", "S15": "Appointment cancelled", "S26": "Patient did not show",
}
STATUS_BY_KIND = {
    EventKind.REQUESTED: "Pending", EventKind.CREATED: "Booked", EventKind.RESCHEDULED: "Booked",
    EventKind.CANCELLED: "Cancelled", EventKind.REJECTED: "Cancelled",
    EventKind.NO_SHOW: "Noshow", EventKind.MEETING_ENDED: "Complete",
}
_DOB_FORMATS = (re.compile(r"^(\d{4})-(\d{2})-(\d{2})$"), re.compile(r"^(\d{4})(\d{2})(\d{2})$"),
                re.compile(r"^(\d{2})\.(\d{2})\.(\d{4})$"))


def hl7_time(value: datetime, zone: ZoneInfo) -> str:
    """`YYYYMMDDHHMMSS±ZZZZ` in the target's zone (DST-correct offset for that instant)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(zone).strftime("%Y%m%d%H%M%S%z")


def build_siu(event: AppointmentEvent, profile: SiuProfile, *, message_event: str,
              control_id: str, message_time: datetime, filler_status: str | None = None,
              filler_id: tuple[str, str] | None = None) -> bytes:
    """`filler_id`: the EHR's own id and namespace for this appointment (SCH-2), once known."""
    if message_event not in EVENT_REASONS:
        raise MappingError(f"SIU event {message_event!r} is not one the bridge sends")
    if not control_id or len(control_id) > MAX_CONTROL_ID:
        raise MappingError("MSH-10 control id must be 1 to 20 characters")
    if event.start is None or event.end is None:
        raise MappingError("event has no start/end time")
    provider = find_provider(profile.providers, event)
    if provider is None:
        raise MappingError("organizer is not a configured provider ([[providers]] calcom_user)")
    status = filler_status or STATUS_BY_KIND[event.kind]
    if profile.status_case == "upper":
        status = status.upper()
    zone = profile.zone
    start, end = hl7_time(event.start, zone), hl7_time(event.end, zone)
    minutes = str(event.duration_minutes or 0)
    provider_xcn = f"{escape(provider.ehr_id)}^{components(provider.name)}"

    segments = [
        _msh(profile, message_event, control_id, hl7_time(message_time, zone)),
        _sch(event, profile, message_event, status, minutes, provider_xcn, filler_id),
        f"TQ1|1||||||{start}|{end}|||||{minutes}^min",
    ]
    if profile.allow_notes and event.notes:
        segments.append(f"NTE|1|P|{escape_text(event.notes)}")
    segments.append(_pid(event, profile))
    segments.append("RGS|1|A")
    etype = find_event_type(profile.event_types, event)
    if etype:
        service = f"{components(etype.code)}^{escape(etype.name or etype.code)}^99CALEHR"
    else:  # the booking's title names the patient: never a code or label (event_title is
        # the event type's title, never the booking's)
        slug = event.event_type_slug or "CALCOM"
        service = f"{escape(slug)}^{escape(event.event_title or slug)}^99CALCOM"
    segments.append(f"AIS|1|A|{service}|{start}|||{minutes}|min||{escape(status)}")
    loc = find_location(profile.locations, event)
    if loc:
        segments.append(f"AIL|1|A|{components(loc.code)}|||{start}|||{minutes}|min||{escape(status)}")
    segments.append(f"AIP|1|A|{provider_xcn}|D^Doctor^HL70182||{start}|||{minutes}|min||"
                    f"{escape(status)}")
    text = "\r".join(segments) + "\r"
    try:
        return text.encode(codec_for(profile.charset))
    except UnicodeEncodeError as exc:
        raise MappingError(f"a value cannot be written in charset {profile.charset} "
                           f"(position {exc.start})") from None


def _msh(p: SiuProfile, message_event: str, control_id: str, when: str) -> str:
    return "|".join([
        "MSH", "^~\\&", escape(p.sending_application), escape(p.sending_facility),
        escape(p.receiving_application), escape(p.receiving_facility), when, "",
        f"SIU^{message_event}^SIU_S12", escape(control_id), escape(p.processing_id), "2.5.1",
        "", "", escape(p.accept_ack_type), escape(p.application_ack_type), "", escape(p.charset),
    ])


def _sch(event: AppointmentEvent, p: SiuProfile, message_event: str, status: str,
         minutes: str, provider_xcn: str, filler_id: tuple[str, str] | None) -> str:
    fields = [""] * 26
    fields[1] = f"{escape(event.appointment_key)}^{escape(p.placer_namespace)}"
    if filler_id and filler_id[0]:
        fields[2] = escape(filler_id[0]) + (f"^{escape(filler_id[1])}" if filler_id[1] else "")
    fields[6] = f"{message_event}^{EVENT_REASONS[message_event]}^HL70003"
    appointment_type = "Tentative" if event.kind is EventKind.REQUESTED else "Normal"
    fields[8] = f"{appointment_type}^{appointment_type}^HL70277"
    fields[9] = minutes
    fields[10] = "min^minutes^ANS+"
    fields[16] = provider_xcn
    fields[20] = f"{escape(p.placer_namespace)}^Cal.com online booking"
    fields[25] = f"{escape(status)}^{escape(status)}^HL70278"
    return "SCH|" + "|".join(fields[1:])


def _dob(value: str) -> str:
    for pattern in _DOB_FORMATS:
        m = pattern.match(value)
        if m:
            a, b, c = m.groups()
            year, month, day = (c, b, a) if len(a) == 2 else (a, b, c)
            try:
                return date(int(year), int(month), int(day)).strftime("%Y%m%d")
            except ValueError:
                break
    raise MappingError("patient date of birth is not a valid date (patient.dob_field)")


def _pid(event: AppointmentEvent, p: SiuProfile) -> str:
    cfg = p.patient
    member_id = event.response(cfg.id_field)
    if member_id:
        authority = escape(cfg.id_authority or p.placer_namespace)
        pid3 = f"{escape(member_id)}^^^{authority}^{escape(cfg.id_type)}"
    else:  # no patient id asked for: identify the patient by the booking, let the EHR match
        pid3 = f"{escape(event.uid)}^^^{escape(p.placer_namespace)}^AN"
    person = event.attendee
    family, given = person.last_name, person.first_name
    if not (family or given) and person.name:
        given, _, family = person.name.rpartition(" ")
    name = f"{escape(family)}^{escape(given)}" if (family or given) else ""
    dob_raw = event.response(cfg.dob_field)
    dob = _dob(dob_raw) if dob_raw else ""
    phone = event.response(cfg.phone_field) or person.phone
    telecom = []
    if phone:
        telecom.append(f"{escape(phone)}^PRN^PH")
    if person.email:
        telecom.append(f"^NET^Internet^{escape(person.email)}")
    fields = ["PID", "1", "", pid3, "", name, "", dob, "", "", "", "", "", "~".join(telecom)]
    return "|".join(fields)
