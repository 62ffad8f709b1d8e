"""AppointmentEvent -> FHIR R4 Appointment and Patient JSON. Pure: no I/O.

Error texts carry codes only: the worker stores them in dead letters and logs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from core.config import (
    EventTypeSettings,
    LocationSettings,
    PatientFieldSettings,
    ProviderSettings,
    Settings,
)
from core.errors import MappingError
from core.lookup import find_event_type, find_location, find_provider
from core.models import AppointmentEvent, EventKind

CANCEL_REASON_SYSTEM = "http://terminology.hl7.org/CodeSystem/appointment-cancellation-reason"
PARTICIPATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
ID_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v2-0203"
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# FHIR `string` is [ \r\n\t\S]+: other C0 controls and lone surrogates make a resource invalid
_NOT_FHIR_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
_SEARCH_SPECIAL = re.compile(r"([\\|,$])")


@dataclass(frozen=True)
class FhirProfile:
    """What one FHIR target needs to map an event. Hashable, so callers may cache it."""

    target_name: str
    identifier_system: str
    patient_identifier_system: str
    allow_notes: bool = False
    timezone: str = "UTC"
    providers: tuple[ProviderSettings, ...] = ()
    event_types: tuple[EventTypeSettings, ...] = ()
    locations: tuple[LocationSettings, ...] = ()
    patient: PatientFieldSettings = field(default_factory=PatientFieldSettings)
    # No config keys for these yet: local code systems for the bridge's own codes.
    practitioner_system: str = "urn:calehr:practitioner"
    location_system: str = "urn:calehr:location"
    event_type_system: str = "urn:calehr:event-type"

    @classmethod
    def from_settings(cls, settings: Settings, target_name: str) -> FhirProfile:
        target = settings.target(target_name)
        patient_system = target.patient_identifier_system or (
            f"urn:calehr:patient:{settings.patient.id_authority}"
            if settings.patient.id_authority else "urn:calehr:patient")
        return cls(
            target_name=target.name,
            identifier_system=target.identifier_system,
            patient_identifier_system=patient_system,
            allow_notes=target.allow_notes,
            timezone=target.timezone,
            providers=settings.providers,
            event_types=settings.event_types,
            locations=settings.locations,
            patient=settings.patient,
        )


def patient_identifier(event: AppointmentEvent, profile: FhirProfile) -> tuple[str, str]:
    """(system, value) of the patient's business identifier, from the configured response field."""
    slug = profile.patient.id_field
    value = event.responses.get(slug) if slug else None
    if not isinstance(value, str | int) or not str(value).strip():
        raise MappingError("patient identifier missing: booking response field "
                           f"{slug or '(patient.id_field not set)'} is empty")
    return profile.patient_identifier_system, str(value).strip()


def search_token(system: str, value: str) -> str:
    """`system|value` for `identifier=` searches and conditional requests; `\\ | , $` inside
    either part are escaped (R4 search.html#escaping), so `A,B` is one value, not A or B."""
    return f"{_search_escape(system)}|{_search_escape(value)}"


def _search_escape(part: str) -> str:
    return _SEARCH_SPECIAL.sub(r"\\\1", part)


def fhir_text(value: Any) -> Any:
    """Every string in a resource made a valid FHIR string (bad characters become U+FFFD)."""
    if isinstance(value, str):
        return _NOT_FHIR_TEXT.sub("\ufffd", value)
    if isinstance(value, dict):
        return {k: fhir_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [fhir_text(v) for v in value]
    return value


def build_appointment(event: AppointmentEvent, profile: FhirProfile,
                      patient_ref: str | None = None) -> dict[str, Any]:
    if event.start is None or event.end is None:
        raise MappingError("missing start or end time")
    provider = provider_of(event, profile)
    status = _status(event)
    zone = ZoneInfo(profile.timezone)
    resource: dict[str, Any] = {
        "resourceType": "Appointment",
        "identifier": [{"system": profile.identifier_system, "value": event.appointment_key}],
        "status": status,
    }
    if status == "cancelled":
        resource["cancelationReason"] = _cancel_reason(event)
    concept = _event_type_concept(event, profile)
    if concept:
        resource["serviceType"] = [concept]
        resource["appointmentType"] = concept
    resource["start"] = event.start.astimezone(zone).isoformat()
    resource["end"] = event.end.astimezone(zone).isoformat()
    if event.duration_minutes:
        resource["minutesDuration"] = event.duration_minutes
    if profile.allow_notes and event.notes:
        resource["comment"] = event.notes
    resource["participant"] = _participants(event, profile, provider, patient_ref)
    return without_empty(fhir_text(resource))


def build_patient(event: AppointmentEvent, profile: FhirProfile) -> dict[str, Any]:
    system, value = patient_identifier(event, profile)
    identifier: dict[str, Any] = {"use": "usual", "system": system, "value": value}
    if profile.patient.id_type:
        identifier["type"] = {"coding": [{"system": ID_TYPE_SYSTEM, "code": profile.patient.id_type}]}
    patient: dict[str, Any] = {"resourceType": "Patient", "identifier": [identifier]}
    person = event.attendee
    full, family, given = _text(person.name), _text(person.last_name), _text(person.first_name)
    name: dict[str, Any] = {"use": "official"}
    if full:
        name["text"] = full
    if family:
        name["family"] = family
    if given:
        name["given"] = [given]
    if len(name) > 1:
        patient["name"] = [name]
    telecom = []
    phone = _text(event.response(profile.patient.phone_field)) or _text(person.phone)
    if phone:
        telecom.append({"system": "phone", "value": phone, "use": "mobile"})
    email = _text(person.email)
    if email:
        telecom.append({"system": "email", "value": email})
    if telecom:
        patient["telecom"] = telecom
    dob = event.response(profile.patient.dob_field)
    if _DATE.match(dob):  # anything else would make the whole resource invalid
        patient["birthDate"] = dob
    return without_empty(fhir_text(patient))


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def without_empty(value: Any) -> Any:
    """FHIR forbids empty and whitespace-only strings and empty arrays and objects: leave them
    out (and any object or array that is empty once they are out); trim the strings kept."""
    if isinstance(value, dict):
        kept = {k: without_empty(v) for k, v in value.items()}
        return {k: v for k, v in kept.items() if v not in ("", None, [], {})}
    if isinstance(value, list):
        kept_items = [without_empty(v) for v in value]
        return [v for v in kept_items if v not in ("", None, [], {})]
    if isinstance(value, str):
        return value.strip()
    return value


def provider_of(event: AppointmentEvent, profile: FhirProfile) -> ProviderSettings:
    provider = find_provider(profile.providers, event)
    if provider is None:
        raise MappingError("unknown provider: the organizer is not in [[providers]]")
    return provider


def _status(event: AppointmentEvent) -> str:
    if event.kind is EventKind.NO_SHOW:
        return "noshow" if event.no_show else "booked"  # no-show taken back
    return {
        EventKind.REQUESTED: "pending",
        EventKind.CREATED: "booked",
        EventKind.RESCHEDULED: "booked",
        EventKind.CANCELLED: "cancelled",
        EventKind.REJECTED: "cancelled",
        EventKind.MEETING_ENDED: "fulfilled",
    }[event.kind]


def _cancel_reason(event: AppointmentEvent) -> dict[str, Any]:
    # A rejected request was turned down by the provider; Cal.com gives no finer cause.
    code = "prov" if event.kind is EventKind.REJECTED else "other"
    default = "Rejected in Cal.com" if event.kind is EventKind.REJECTED else "Cancelled in Cal.com"
    return {"coding": [{"system": CANCEL_REASON_SYSTEM, "code": code}],
            "text": event.cancellation_reason or default}


def _event_type_concept(event: AppointmentEvent, profile: FhirProfile) -> dict[str, Any] | None:
    et = find_event_type(profile.event_types, event)
    if et is not None:
        coding = {"system": profile.event_type_system, "code": et.code}
        if et.name:
            coding["display"] = et.name
        return {"coding": [coding], "text": et.name or et.code}
    return {"text": event.event_type_slug} if event.event_type_slug else None


def _participants(event: AppointmentEvent, profile: FhirProfile, provider: ProviderSettings,
                  patient_ref: str | None) -> list[dict[str, Any]]:
    if patient_ref:
        patient_actor: dict[str, Any] = {"reference": patient_ref, "type": "Patient"}
    else:
        system, value = patient_identifier(event, profile)
        patient_actor = {"type": "Patient", "identifier": {"system": system, "value": value}}
    practitioner = {"type": "Practitioner", "display": _display_name(provider.name),
                    "identifier": {"system": profile.practitioner_system, "value": provider.ehr_id}}
    out: list[dict[str, Any]] = [
        {"actor": patient_actor, "required": "required", "status": "accepted"},
        {"type": [{"coding": [{"system": PARTICIPATION_SYSTEM, "code": "PPRF",
                               "display": "primary performer"}]}],
         "actor": practitioner, "required": "required",
         # a request is not confirmed by the provider yet
         "status": "needs-action" if event.kind is EventKind.REQUESTED else "accepted"},
    ]
    location = find_location(profile.locations, event)
    if location:
        actor: dict[str, Any] = {"type": "Location", "identifier": {
            "system": profile.location_system, "value": location.code}}
        if location.name:
            actor["display"] = location.name
        out.append({"actor": actor, "required": "required", "status": "accepted"})
    return out


def _display_name(hl7_name: str) -> str:
    """`Okafor^Amina^^^Dr.` (XCN-style config value) -> `Dr. Amina Okafor`."""
    if "^" not in hl7_name:
        return hl7_name
    parts = (hl7_name.split("^") + [""] * 5)[:5]
    family, given, middle, suffix, prefix = parts
    return " ".join(p for p in (prefix, given, middle, family, suffix) if p)
