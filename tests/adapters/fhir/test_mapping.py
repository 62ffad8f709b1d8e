from __future__ import annotations

import dataclasses
import json
from datetime import datetime
from pathlib import Path

import pytest
from fhir.resources.R4B.appointment import Appointment
from fhir.resources.R4B.patient import Patient

from adapters.calcom.payload import parse_body
from adapters.fhir import FhirProfile, build_appointment, build_patient
from adapters.fhir.mapping import patient_identifier, search_token
from core.errors import MappingError
from core.models import EventKind
from tests.adapters.fhir.fhir_server import appointment_problems
from tests.adapters.fhir.helpers import PATIENT_SYSTEM, event_from, fhir_settings, no_show_of
from tests.support import FIXTURES

KEY = "7xQm2kVd9RbTn4FgHs1LpA"
PATIENT_PHI = ("Jordan", "Reyes", "jordan.reyes@example.com", "+13125550147", "1984-03-09",
               "migraines", "Priya", "Natarajan", "priya.natarajan@example.com", "1971-11-23")
# the documented shapes; the bodies made by Cal.com's own code: tests/worker/test_real_bodies.py
BOOKING_FIXTURES = sorted(p.name for p in FIXTURES.glob("0*.json")
                          if parse_body(p.read_bytes()).handled)


@pytest.fixture
def profile(tmp_path: Path) -> FhirProfile:
    return FhirProfile.from_settings(fhir_settings(tmp_path), "fhir")


def valid(resource: dict) -> dict:
    """Validate as R4 (structure via fhir.resources, bindings/invariants via the test server)."""
    Appointment.model_validate(resource)
    assert appointment_problems(resource) == []
    return resource


def by_type(resource: dict, kind: str) -> dict:
    [found] = [p for p in resource["participant"] if p["actor"].get("type") == kind]
    return found


def test_there_are_booking_fixtures():
    assert len(BOOKING_FIXTURES) >= 4


@pytest.mark.parametrize("name", BOOKING_FIXTURES)
def test_every_booking_fixture_maps_to_a_valid_appointment_and_patient(name: str,
                                                                        profile: FhirProfile):
    event = event_from(name)
    resource = valid(build_appointment(event, profile))
    assert resource["identifier"] == [{"system": "urn:calcom:appointment",
                                       "value": event.appointment_key}]
    Patient.model_validate(build_patient(event, profile))
    text = json.dumps(resource)
    assert not [s for s in PATIENT_PHI if s in text]  # the patient is referenced by id only


def test_created_is_booked_with_local_times_codes_and_participants(profile: FhirProfile):
    resource = valid(build_appointment(event_from("02_booking_created.json"), profile))
    assert resource["status"] == "booked"
    assert resource["start"] == "2026-10-14T10:00:00-05:00"  # 15:00Z in America/Chicago (CDT)
    assert resource["end"] == "2026-10-14T10:30:00-05:00"
    assert datetime.fromisoformat(resource["start"]) == datetime.fromisoformat("2026-10-14T15:00:00+00:00")
    assert resource["minutesDuration"] == 30
    assert resource["identifier"] == [{"system": "urn:calcom:appointment", "value": KEY}]
    assert resource["serviceType"][0]["coding"][0] == {
        "system": "urn:calehr:event-type", "code": "NPC", "display": "New Patient Consult"}
    assert resource["appointmentType"]["coding"][0]["code"] == "NPC"
    assert "cancelationReason" not in resource and "comment" not in resource
    patient = by_type(resource, "Patient")
    assert patient["actor"] == {"type": "Patient",
                                "identifier": {"system": PATIENT_SYSTEM, "value": "XQJ-448-21907"}}
    assert patient["status"] == "accepted"
    doctor = by_type(resource, "Practitioner")
    assert doctor["actor"]["identifier"]["value"] == "OKAFOR01"
    assert doctor["actor"]["display"] == "Dr. Amina Okafor"
    assert doctor["status"] == "accepted"
    location = by_type(resource, "Location")
    assert location["actor"]["identifier"]["value"] == "LAKESIDE^400^^LSC"


def test_rescheduled_keeps_the_key_and_carries_the_new_times(profile: FhirProfile):
    resource = valid(build_appointment(event_from("04_booking_rescheduled.json"), profile))
    assert resource["status"] == "booked"
    assert resource["identifier"][0]["value"] == KEY
    assert (resource["start"], resource["end"]) == ("2026-10-16T14:30:00-05:00",
                                                    "2026-10-16T15:00:00-05:00")


def test_cancelled_has_status_and_reason(profile: FhirProfile):
    resource = valid(build_appointment(event_from("05_booking_cancelled.json"), profile))
    assert resource["status"] == "cancelled"
    assert resource["identifier"][0]["value"] == KEY
    assert resource["cancelationReason"]["text"].startswith("Patient admitted")
    assert resource["cancelationReason"]["coding"][0]["code"] == "other"
    assert resource["start"] == "2026-10-16T14:30:00-05:00"
    assert {p["actor"]["type"] for p in resource["participant"]} == {"Patient", "Practitioner",
                                                                     "Location"}


def test_rejected_request_is_cancelled_by_the_provider(profile: FhirProfile):
    def reject(body: dict) -> None:
        body["triggerEvent"] = "BOOKING_REJECTED"
        body["payload"].update(status="REJECTED", rejectionReason="Outside referral needed")

    resource = valid(build_appointment(event_from("03_booking_requested.json", reject), profile))
    assert resource["status"] == "cancelled"
    assert resource["cancelationReason"] == {"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/appointment-cancellation-reason",
        "code": "prov"}], "text": "Outside referral needed"}


def test_requested_is_pending_and_awaits_the_provider(profile: FhirProfile):
    resource = valid(build_appointment(event_from("03_booking_requested.json"), profile))
    assert resource["status"] == "pending"
    assert by_type(resource, "Practitioner")["status"] == "needs-action"
    assert resource["serviceType"][0]["coding"][0]["code"] == "FUV"


def test_no_show_and_its_reversal(profile: FhirProfile):
    created = event_from("02_booking_created.json")
    resource = valid(build_appointment(no_show_of(created), profile))
    assert resource["status"] == "noshow"
    assert "cancelationReason" not in resource  # app-4 says no-show: strict servers reject it
    assert resource["start"] == "2026-10-14T10:00:00-05:00"
    assert resource["identifier"][0]["value"] == KEY
    assert valid(build_appointment(no_show_of(created, no_show=False), profile))["status"] == "booked"


def test_a_no_show_without_its_booking_has_no_times(profile: FhirProfile):
    created = event_from("02_booking_created.json")
    bare = dataclasses.replace(no_show_of(created), start=None, end=None)
    with pytest.raises(MappingError, match="missing start"):
        build_appointment(bare, profile)


def test_meeting_ended_flat_body_is_fulfilled(profile: FhirProfile):
    booking = event_from("02_booking_created.json")  # for comparison only
    body = json.loads((FIXTURES / "02_booking_created.json").read_text())["payload"]
    body = dict(body, triggerEvent="MEETING_ENDED", id=90211, user=body.pop("organizer"))
    event = event_from(body)
    assert event.kind is EventKind.MEETING_ENDED
    resource = valid(build_appointment(event, profile))
    assert resource["status"] == "fulfilled"
    assert resource["start"] == valid(build_appointment(booking, profile))["start"]


def test_notes_only_when_the_target_allows_them(tmp_path: Path, profile: FhirProfile):
    event = event_from("03_booking_requested.json")
    assert "comment" not in build_appointment(event, profile)
    allowed = FhirProfile.from_settings(fhir_settings(tmp_path, allow_notes=True), "fhir")
    assert valid(build_appointment(event, allowed))["comment"] == "MRI done at outside facility 2026-09-30"


def test_unknown_provider_is_a_mapping_error_without_phi(profile: FhirProfile):
    def stranger(body: dict) -> None:
        body["payload"]["organizer"].update(username="dr-who", email="who@example-hospital.org")

    with pytest.raises(MappingError, match="unknown provider") as info:
        build_appointment(event_from("02_booking_created.json", stranger), profile)
    assert "dr-who" not in str(info.value) and "example" not in str(info.value)


def test_provider_matches_by_email_too(tmp_path: Path):
    settings = fhir_settings(tmp_path)
    settings = dataclasses.replace(settings, providers=(dataclasses.replace(
        settings.providers[0], calcom_user="Amina.Okafor@example-hospital.org"),))
    profile = FhirProfile.from_settings(settings, "fhir")
    resource = build_appointment(event_from("02_booking_created.json"), profile)
    assert by_type(resource, "Practitioner")["actor"]["identifier"]["value"] == "OKAFOR01"


def test_patient_reference_replaces_the_logical_reference(profile: FhirProfile):
    resource = valid(build_appointment(event_from("02_booking_created.json"), profile,
                                       patient_ref="Patient/abc"))
    assert by_type(resource, "Patient")["actor"] == {"reference": "Patient/abc", "type": "Patient"}


def test_unmapped_event_type_and_location_are_left_out_or_plain(profile: FhirProfile):
    def elsewhere(body: dict) -> None:
        body["payload"].update(type="telehealth", eventTypeId=5, location="https://meet.example/x")

    resource = valid(build_appointment(event_from("02_booking_created.json", elsewhere), profile))
    assert resource["serviceType"] == [{"text": "telehealth"}]
    assert {p["actor"]["type"] for p in resource["participant"]} == {"Patient", "Practitioner"}


def test_build_patient_from_responses(profile: FhirProfile):
    patient = build_patient(event_from("02_booking_created.json"), profile)
    Patient.model_validate(patient)
    assert patient["identifier"][0]["system"] == PATIENT_SYSTEM
    assert patient["identifier"][0]["value"] == "XQJ-448-21907"
    assert patient["identifier"][0]["type"]["coding"][0]["code"] == "MB"
    assert patient["name"] == [{"use": "official", "text": "Jordan Reyes", "family": "Reyes",
                                "given": ["Jordan"]}]
    assert patient["birthDate"] == "1984-03-09"
    assert {t["system"]: t["value"] for t in patient["telecom"]} == {
        "phone": "+13125550147", "email": "jordan.reyes@example.com"}


def test_a_malformed_birth_date_is_left_out(profile: FhirProfile):
    def odd(body: dict) -> None:
        body["payload"]["responses"]["dateOfBirth"]["value"] = "09/03/1984"

    patient = build_patient(event_from("02_booking_created.json", odd), profile)
    Patient.model_validate(patient)
    assert "birthDate" not in patient


def test_missing_patient_identifier_is_a_mapping_error(profile: FhirProfile):
    def anonymous(body: dict) -> None:
        del body["payload"]["responses"]["insuranceMemberId"]
        del body["payload"]["userFieldsResponses"]["insuranceMemberId"]

    event = event_from("02_booking_created.json", anonymous)
    with pytest.raises(MappingError, match="patient identifier") as info:
        build_appointment(event, profile)
    assert "Jordan" not in str(info.value)
    assert build_appointment(event, profile, patient_ref="Patient/1")["status"] == "booked"


def test_profile_from_settings(tmp_path: Path):
    profile = FhirProfile.from_settings(fhir_settings(tmp_path, identifier_system="urn:x:appt"),
                                        "fhir")
    assert profile.identifier_system == "urn:x:appt"
    assert profile.timezone == "America/Chicago"
    assert hash(profile)  # cached per target by the worker
    fallback = FhirProfile.from_settings(fhir_settings(tmp_path, patient_identifier_system=""), "fhir")
    assert fallback.patient_identifier_system == "urn:calehr:patient:INS"
    event = event_from("02_booking_created.json")
    assert search_token(*patient_identifier(event, fallback)) == "urn:calehr:patient:INS|XQJ-448-21907"


def _strings(value: object) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


def test_blank_and_whitespace_values_are_left_out_everywhere(profile: FhirProfile):
    event = event_from("02_booking_created.json")
    event = dataclasses.replace(
        event, attendee=dataclasses.replace(event.attendee, phone="   ", first_name=" ",
                                            last_name="\t", name="  Jordan Reyes "),
        responses={**event.responses, "attendeePhoneNumber": "  "},
        event_type_slug="  ")
    patient = build_patient(event, profile)
    appointment = build_appointment(event, profile)
    for resource in (patient, appointment):
        assert [s for s in _strings(resource) if not s.strip() or s != s.strip()] == []
    assert patient["telecom"] == [{"system": "email", "value": "jordan.reyes@example.com"}]
    assert patient["name"] == [{"use": "official", "text": "Jordan Reyes"}]
    Patient.model_validate(patient)
    Appointment.model_validate(appointment)


# Issue 17 finding 1 (FHIR side) -----------------------------------------------------------
FHIR_STRING = __import__("re").compile(r"[ \r\n\t\S]+")  # R4 datatypes.html#string
HOSTILE_TEXTS = ("\x0bMSH#^~\\&#INJECTED01", "a\x1c\rb", "\x00", "\ud800lone", "\x7f\x1b[2J")




@pytest.mark.parametrize("text", HOSTILE_TEXTS)
def test_control_characters_never_reach_a_fhir_string(tmp_path, text):
    prof = dataclasses.replace(FhirProfile.from_settings(fhir_settings(tmp_path), "fhir"),
                               allow_notes=True)

    def edit(body):
        p = body["payload"]
        p["attendees"][0].update(firstName=text, lastName=text, name=text)
        p["additionalNotes"] = text
        p["type"] = text
        p["responses"]["insuranceMemberId"] = {"label": "x", "value": "ID" + text}

    event = event_from("02_booking_created.json", edit)
    for resource in (build_appointment(event, prof), build_patient(event, prof)):
        for s in _strings(resource):
            assert FHIR_STRING.fullmatch(s), repr(s)
            assert not any(0xD800 <= ord(c) <= 0xDFFF for c in s)
        json.dumps(resource, ensure_ascii=False).encode("utf-8")  # valid UTF-8 on the wire
    Patient.model_validate(build_patient(event, prof))


def test_search_token_escapes_so_a_comma_cannot_widen_the_search():
    # R4 search.html#escaping: `,` is OR and `|` splits system from value
    assert search_token("urn:x", "A,B") == "urn:x|A\\,B"
    assert search_token("urn:x", "A|B$C\\") == "urn:x|A\\|B\\$C\\\\"
