"""FhirClient against a real FHIR R4 server nobody on this project wrote: Medplum's FHIR router
and in-memory repository with Medplum's validator (tests/peers/hl7fhir/fhir_server.cjs)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from adapters.fhir import FhirClient, FhirProfile
from tests.adapters.fhir.helpers import PATIENT_SYSTEM, event_from, fhir_settings
from tests.peers.hl7fhir_peers import start
from tests.support import PHI_STRINGS

KEY = "7xQm2kVd9RbTn4FgHs1LpA"  # the first booking uid: the appointment key and SCH-1
FLOW = ("02_booking_created.json", "04_booking_rescheduled.json", "05_booking_cancelled.json")


@pytest.fixture(scope="module")
def medplum(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    proc, port = start("medplum-fhir", "fhir_server.cjs", ["0"],
                       tmp_path_factory.mktemp("medplum"))
    yield f"http://127.0.0.1:{port}/fhir"
    proc.stop()


def client_for(tmp_path: Path, url: str, **target: str) -> tuple[FhirClient, FhirProfile]:
    settings = fhir_settings(tmp_path, url, **target)
    return FhirClient(settings.target("fhir")), FhirProfile.from_settings(settings, "fhir")


def search(url: str, resource_type: str, token: str) -> list[dict]:
    resp = requests.get(f"{url}/{resource_type}", params={"identifier": token}, timeout=10)
    assert resp.status_code == 200, resp.text
    return [e["resource"] for e in resp.json().get("entry", [])]


def test_created_rescheduled_cancelled_leave_one_valid_cancelled_appointment(medplum, tmp_path):
    system = "urn:calcom:appointment:medplum-1"
    client, profile = client_for(tmp_path, medplum, identifier_system=system)
    try:
        results = [client.send_appointment(event_from(name), profile) for name in FLOW]
    finally:
        client.close()
    assert [r.ok for r in results] == [True] * 3, [r.detail for r in results]
    assert [r.status_code for r in results] == [201, 200, 200]
    assert len({r.remote_id for r in results}) == 1  # one resource, updated in place
    (appointment,) = search(medplum, "Appointment", f"{system}|{KEY}")
    assert appointment["status"] == "cancelled"
    assert appointment["start"] == "2026-10-16T14:30:00-05:00"
    patients = search(medplum, "Patient", f"{PATIENT_SYSTEM}|XQJ-448-21907")
    assert len(patients) == 1  # found by POST _search the second time, not created again
    assert f"Patient/{patients[0]['id']}" in [p["actor"].get("reference")
                                              for p in appointment["participant"]]


def test_a_400_carries_the_servers_own_words_without_phi(medplum, tmp_path):
    # a patient identifier system with a space is not a FHIR uri: the validator says so
    client, profile = client_for(tmp_path, medplum, patient_identifier_system="urn:site patients")
    try:
        result = client.send_appointment(event_from("02_booking_created.json"), profile)
    finally:
        client.close()
    assert not result.ok and not result.transient and result.status_code == 400
    assert result.detail.startswith("patient_create: http_400 issues=")
    assert "(at Patient.identifier[0].system)" in result.detail, result.detail
    assert [s for s in PHI_STRINGS if s in result.detail] == []


def test_whitespace_only_values_are_not_sent_so_the_server_takes_the_patient(medplum, tmp_path):
    created = event_from("02_booking_created.json")
    blank = dataclasses.replace(created, attendee=dataclasses.replace(created.attendee,
                                                                      phone="   "),
                                responses={**created.responses, "attendeePhoneNumber": "   ",
                                           "insuranceMemberId": "WS-0001"})
    client, profile = client_for(tmp_path, medplum,
                                 identifier_system="urn:calcom:appointment:medplum-3")
    try:
        result = client.send_appointment(blank, profile)
    finally:
        client.close()
    assert result.ok, result.detail
    (patient,) = search(medplum, "Patient", f"{PATIENT_SYSTEM}|WS-0001")
    assert [t["system"] for t in patient["telecom"]] == ["email"]
