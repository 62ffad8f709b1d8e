"""POST/PUT /fhir/Appointment and /fhir/Slot through the real web process, into the ICS feed."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
import requests

from core.blocks import block_uid
from tests.adapters.hl7v2.listener import busy_events, feed
from tests.support import FUTURE_YEAR as YEAR
from tests.support import Proc, config_text, free_port, wait_http, web_cmd

pytestmark = pytest.mark.slow
TOKEN = "fhir-inbound-test-token"
PATIENT = ("Wexford", "Hannelore", "MRN-77881-Q")
SYSTEM = "urn:oid:1.2.276.0.76.3.1.99.1"


@pytest.fixture
def web(stack, outbox):
    stack.write_config(config_text(outbox) + f'\n[inbound]\nfhir_token = "{TOKEN}"\n')
    port = free_port()
    stack.procs.append(Proc("web", web_cmd(port), stack.env, stack.log_dir))
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/healthz")
    return base


def send(base: str, path: str, resource: dict | bytes, method: str = "POST",
         token: str | None = TOKEN) -> requests.Response:
    headers = {"Content-Type": "application/fhir+json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    body = resource if isinstance(resource, bytes) else json.dumps(resource).encode()
    return requests.request(method, f"{base}/fhir/{path}", data=body, headers=headers, timeout=10)


def appointment(status: str = "booked", practitioner: str = "OKAFOR01", **changes) -> dict:
    resource = {
        "resourceType": "Appointment", "id": "appt-991",
        "identifier": [{"system": SYSTEM, "value": "ORBIS-991"}],
        "status": status, "start": f"{YEAR}-05-06T09:00:00+02:00", "end": f"{YEAR}-05-06T09:45:00+02:00",
        "participant": [
            {"actor": {"reference": "Patient/p1", "display": f"{PATIENT[1]} {PATIENT[0]}",
                       "identifier": {"value": PATIENT[2]}}, "status": "accepted"},
            {"actor": {"identifier": {"system": "urn:ehr:staff", "value": practitioner},
                       "display": "Dr. Okafor"}, "status": "accepted"},
        ],
    }
    resource.update(changes)
    return resource


def slot(status: str = "busy") -> dict:
    return {
        "resourceType": "Slot", "id": "slot-17",
        "contained": [{"resourceType": "Schedule", "id": "sched",
                       "actor": [{"identifier": {"value": "OKAFOR01"}}]}],
        "schedule": {"reference": "#sched"}, "status": status,
        "start": f"{YEAR}-05-07T13:00:00Z", "end": f"{YEAR}-05-07T14:00:00Z",
    }


def issue(resp: requests.Response) -> dict:
    body = resp.json()
    assert body["resourceType"] == "OperationOutcome"
    return body["issue"][0]


def test_a_token_is_required(web):
    for token in (None, "wrong-token"):
        resp = send(web, "Appointment", appointment(), token=token)
        assert resp.status_code == 401 and issue(resp)["code"] == "login"
    assert busy_events(web) == {}


def test_booked_appointment_blocks_and_cancelled_releases(web, rclient):
    resp = send(web, "Appointment", appointment())
    assert resp.status_code == 201, resp.text
    stored = resp.json()  # the stored resource, as a FHIR server answers a create
    assert stored["resourceType"] == "Appointment" and stored["id"] == "appt-991"
    assert stored["meta"]["versionId"] == "1" and stored["status"] == "booked"
    assert resp.headers["Location"] == f"{web}/fhir/Appointment/appt-991/_history/1"
    assert resp.headers["ETag"] == 'W/"1"'
    uid = block_uid(SYSTEM, "ORBIS-991")
    events = busy_events(web)
    assert list(events) == [uid]
    assert events[uid]["start"] == datetime(YEAR, 5, 6, 7, 0, tzinfo=UTC)
    assert events[uid]["end"] == datetime(YEAR, 5, 6, 7, 45, tzinfo=UTC)
    body = feed(web).text
    assert [s for s in (*PATIENT, "ORBIS-991", "Dr. Okafor") if s in body] == []
    # the request is kept, encrypted: no plain patient data in Redis
    stored = [rclient.hget(k, "body") for k in rclient.keys("calehr:inbound:in_*")]
    assert len(stored) == 1 and PATIENT[0].encode() not in stored[0]

    moved = send(web, "Appointment/appt-991", appointment(start=f"{YEAR}-05-06T10:00:00Z",
                                                          end=f"{YEAR}-05-06T10:30:00Z"), "PUT")
    assert moved.status_code == 200
    assert moved.json()["meta"]["versionId"] == "2" and moved.headers["ETag"] == 'W/"2"'
    # versions are kept per resource as long as inbound messages (retention), not for ever
    ttl = rclient.ttl("calehr:fhir-inbound:version:Appointment/appt-991")
    assert 0 < ttl <= 30 * 86400  # retention.event_body_days
    assert not rclient.exists("calehr:fhir-inbound:versions")
    assert busy_events(web)[uid]["start"] == datetime(YEAR, 5, 6, 10, 0, tzinfo=UTC)
    assert busy_events(web)[uid]["sequence"] == 1

    noshow = send(web, "Appointment/appt-991", appointment("noshow"), "PUT")
    assert noshow.status_code == 200 and list(busy_events(web)) == [uid]
    cancelled = send(web, "Appointment/appt-991", appointment("cancelled"), "PUT")
    assert cancelled.status_code == 200
    assert busy_events(web) == {}


def test_slot_busy_blocks_and_free_releases(web):
    assert send(web, "Slot", slot("busy")).status_code == 201
    uid = block_uid("fhir", "Slot/slot-17")
    assert busy_events(web)[uid]["start"] == datetime(YEAR, 5, 7, 13, 0, tzinfo=UTC)
    assert send(web, "Slot/slot-17", slot("free"), "PUT").status_code == 200
    assert busy_events(web) == {}
    by_identifier = {**slot("busy-unavailable"), "contained": [],
                     "schedule": {"identifier": {"value": "OKAFOR01"}}}
    assert send(web, "Slot", by_identifier).status_code == 201
    assert len(busy_events(web)) == 1


BAD = [
    (b"{not json", 400, "structure"),
    (json.dumps({"resourceType": "Patient"}).encode(), 400, "structure"),
    (appointment(practitioner="SOMEONE-ELSE"), 422, "not-found"),
    (appointment(start=None), 422, "required"),
    (appointment(end=f"{YEAR}-05-06T08:00:00+02:00"), 422, "value"),
    (appointment(start=f"{YEAR}-05-06T09:00:00"), 422, "value"),
    (appointment(status=None), 422, "required"),
    (appointment(identifier=[], id=None), 422, "required"),
]


def test_bad_requests_get_an_operation_outcome_and_change_nothing(web):
    for body, status, code in BAD:
        resp = send(web, "Appointment", body)
        assert resp.status_code == status, resp.text
        outcome = issue(resp)
        assert outcome["severity"] == "error" and outcome["code"] == code, outcome
        assert [s for s in PATIENT if s in resp.text] == []
    assert busy_events(web) == {}


def send_with(base: str, path: str, resource: dict, prefer: str,
              method: str = "POST") -> requests.Response:
    return requests.request(method, f"{base}/fhir/{path}", data=json.dumps(resource),
                            headers={"Content-Type": "application/fhir+json",
                                     "Authorization": f"Bearer {TOKEN}", "Prefer": prefer},
                            timeout=10)


def test_prefer_return_minimal_and_operation_outcome(web):
    minimal = send_with(web, "Appointment", appointment(), "return=minimal")
    assert minimal.status_code == 201 and minimal.content == b""
    assert minimal.headers["Location"].endswith("/fhir/Appointment/appt-991/_history/1")
    told = send_with(web, "Appointment/appt-991", appointment("cancelled"),
                     "return=OperationOutcome", "PUT")
    assert told.status_code == 200 and issue(told)["severity"] == "information"
    assert told.headers["ETag"] == 'W/"2"'
    no_id = {k: v for k, v in slot().items() if k != "id"}
    no_id["identifier"] = [{"system": SYSTEM, "value": "SLOT-5"}]
    created = send_with(web, "Slot", no_id, "return=representation")
    assert created.status_code == 201 and created.json()["id"]  # the server gave it an id
    assert created.headers["Location"].endswith(f"/fhir/Slot/{created.json()['id']}/_history/1")


def test_a_provider_is_matched_by_practitioner_reference_through_its_fhir_id(stack, outbox):
    text = config_text(outbox).replace('ics_token = "tok-okafor"\n',
                                       'ics_token = "tok-okafor"\nfhir_id = "prac-4711"\n', 1)
    stack.write_config(text + f'\n[inbound]\nfhir_token = "{TOKEN}"\n')
    port = free_port()
    stack.procs.append(Proc("web", web_cmd(port), stack.env, stack.log_dir))
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/healthz")
    by_reference = appointment()
    by_reference["participant"][1]["actor"] = {"reference": "Practitioner/prac-4711"}
    resp = send(base, "Appointment", by_reference)
    assert resp.status_code == 201, resp.text
    assert list(busy_events(base)) == [block_uid(SYSTEM, "ORBIS-991")]
    other = appointment(identifier=[{"system": SYSTEM, "value": "ORBIS-992"}], id="appt-992")
    other["participant"][1]["actor"] = {"reference": "Practitioner/prac-0000"}
    assert send(base, "Appointment", other).status_code == 422
