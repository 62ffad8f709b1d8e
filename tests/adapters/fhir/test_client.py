"""FhirClient against the in-memory FHIR server over real HTTP (no mocks of requests)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

from adapters.fhir import FhirClient, FhirProfile
from core.models import AppointmentEvent
from tests.adapters.fhir.fhir_server import FhirServer, outcome
from tests.adapters.fhir.helpers import PATIENT_SYSTEM, event_from, fhir_settings
from tests.support import PHI_STRINGS, free_port

KEY = "7xQm2kVd9RbTn4FgHs1LpA"

Connect = Callable[..., tuple[FhirClient, FhirProfile]]


@pytest.fixture
def server() -> Iterator[FhirServer]:
    with FhirServer() as srv:
        yield srv


@pytest.fixture
def connect(tmp_path: Path) -> Iterator[Connect]:
    """connect(url, **target settings) -> (client, profile); clients are closed afterwards."""
    clients: list[FhirClient] = []

    def make(url: str, **target: Any) -> tuple[FhirClient, FhirProfile]:
        settings = fhir_settings(tmp_path, url, **target)
        client = FhirClient(settings.target("fhir"))
        clients.append(client)
        return client, FhirProfile.from_settings(settings, "fhir")

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def created() -> AppointmentEvent:
    return event_from("02_booking_created.json")


def test_created_rescheduled_cancelled_leave_one_cancelled_appointment(server: FhirServer,
                                                                       connect: Connect):
    client, profile = connect(server.base_url)
    results = [client.send_appointment(event_from(name), profile) for name in (
        "02_booking_created.json", "04_booking_rescheduled.json", "05_booking_cancelled.json")]
    assert [r.ok for r in results] == [True, True, True], [r.detail for r in results]
    assert [r.status_code for r in results] == [201, 200, 200]
    assert len({r.remote_id for r in results}) == 1
    [appointment] = server.all("Appointment")
    assert appointment["id"] == results[0].remote_id
    assert appointment["status"] == "cancelled"
    assert appointment["identifier"] == [{"system": "urn:calcom:appointment", "value": KEY}]
    assert (appointment["start"], appointment["end"]) == ("2026-10-16T14:30:00-05:00",
                                                          "2026-10-16T15:00:00-05:00")
    assert appointment["meta"]["versionId"] == "3"
    [patient] = server.all("Patient")
    assert appointment["participant"][0]["actor"]["reference"] == f"Patient/{patient['id']}"
    puts = server.fhir_requests("PUT", "/Appointment")
    assert [r.query["identifier"] for r in puts] == [[f"urn:calcom:appointment|{KEY}"]] * 3


def patient_creates(server: FhirServer) -> list:
    return [r for r in server.fhir_requests("POST") if r.path.rstrip("/").endswith("/Patient")]


def test_the_same_event_twice_leaves_one_resource(server: FhirServer, connect: Connect,
                                                  created: AppointmentEvent):
    client, profile = connect(server.base_url)
    first = client.send_appointment(created, profile)
    second = client.send_appointment(created, profile)
    assert first.ok and second.ok
    assert first.remote_id == second.remote_id
    assert len(server.all("Appointment")) == 1
    assert len(server.all("Patient")) == 1
    assert len(patient_creates(server)) == 1  # the second found it by search
    searches = server.fhir_requests("POST", "/Patient/_search")
    assert [parse_qs(r.body) for r in searches] == [
        {"identifier": [f"{PATIENT_SYSTEM}|XQJ-448-21907"]}] * 2
    # the member id never appears in a URL (EHR and proxy access logs keep URLs)
    assert [r.path for r in server.requests if "XQJ" in r.path or "XQJ" in str(r.query)] == []


def test_patient_is_created_once_with_if_none_exist(server: FhirServer, connect: Connect,
                                                    created: AppointmentEvent):
    client, profile = connect(server.base_url)
    assert client.send_appointment(created, profile).ok
    # a lagging search index: the search misses the patient, the conditional create must not
    server.fail_next(1, 200, {"resourceType": "Bundle", "type": "searchset", "total": 0},
                     path_contains="/Patient")
    assert client.send_appointment(created, profile).ok
    posts = patient_creates(server)
    assert len(posts) == 2
    assert {r.headers["if-none-exist"] for r in posts} == {f"identifier={PATIENT_SYSTEM}|XQJ-448-21907"}
    assert [r.status for r in posts] == [201, 200]
    [patient] = server.all("Patient")
    assert patient["meta"]["versionId"] == "1"
    assert patient["birthDate"] == "1984-03-09"


def test_several_matching_patients_is_permanent(server: FhirServer, connect: Connect,
                                                created: AppointmentEvent):
    client, profile = connect(server.base_url)
    for _ in range(2):
        server.seed({"resourceType": "Patient", "identifier": [
            {"system": PATIENT_SYSTEM, "value": "XQJ-448-21907"}]})
    result = client.send_appointment(created, profile)
    assert not result.ok and not result.transient
    assert result.status_code == 412
    assert result.detail.startswith("patient_create: http_412 issues=duplicate")
    assert server.all("Appointment") == []


def test_503_with_retry_after_is_transient_then_ok(server: FhirServer, connect: Connect,
                                                   created: AppointmentEvent):
    client, profile = connect(server.base_url)
    server.fail_next(1, 503, outcome("transient", "maintenance"), {"Retry-After": "7"})
    first = client.send_appointment(created, profile)
    assert (first.ok, first.transient, first.status_code, first.retry_after) == (False, True, 503, 7.0)
    assert "http_503" in first.detail
    second = client.send_appointment(created, profile)
    assert second.ok and second.retry_after is None
    assert len(server.all("Appointment")) == 1


@pytest.mark.parametrize("status", [408, 429, 500, 502])
def test_other_transient_statuses(server: FhirServer, connect: Connect, created: AppointmentEvent,
                                  status: int):
    client, profile = connect(server.base_url)
    server.fail_next(1, status, path_contains="/Appointment")
    result = client.send_appointment(created, profile)
    assert result.transient and result.status_code == status
    assert result.detail == f"appointment: http_{status}"


def test_retry_after_as_http_date(server: FhirServer, connect: Connect, created: AppointmentEvent):
    client, profile = connect(server.base_url)
    server.fail_next(1, 429, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
    result = client.send_appointment(created, profile)
    assert result.transient and result.retry_after == 0.0  # a date in the past: retry now


def test_422_is_permanent_with_codes_and_no_phi(server: FhirServer, connect: Connect,
                                                created: AppointmentEvent):
    client, profile = connect(server.base_url)
    echo = ("Patient Jordan Reyes (born 1984-03-09, jordan.reyes@example.com, +13125550147, "
            "member XQJ-448-21907) already has a booking; reason New patient - recurring migraines")
    body = {"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": "business-rule", "diagnostics": echo},
        {"severity": "error", "code": "invariant"}]}
    server.fail_next(1, 422, body, path_contains="/Appointment")
    result = client.send_appointment(created, profile)
    assert not result.ok and not result.transient
    assert result.status_code == 422
    assert result.detail.startswith("appointment: http_422 issues=business-rule,invariant")
    assert "already has a booking" in result.detail
    assert [s for s in PHI_STRINGS if s in result.detail] == []
    assert "Jordan Reyes" in result.response_excerpt  # kept for people, stored encrypted
    assert server.all("Appointment") == []


def test_an_invalid_appointment_is_rejected_by_the_server(server: FhirServer, connect: Connect,
                                                          created: AppointmentEvent):
    client, profile = connect(server.base_url)
    client.send_appointment(created, profile)
    resp = client.session.put(f"{server.base_url}/Appointment", params={"identifier": "a|b"},
                              json={"resourceType": "Appointment", "status": "bogus",
                                    "participant": []},
                              headers={"Content-Type": "application/fhir+json"}, timeout=5)
    assert resp.status_code == 400
    assert resp.json()["issue"][0]["code"] == "invariant"


def test_connection_refused_is_transient(connect: Connect, created: AppointmentEvent):
    client, profile = connect(f"http://127.0.0.1:{free_port()}/fhir", connect_timeout=2.0)
    result = client.send_appointment(created, profile)
    assert (result.ok, result.transient, result.status_code) == (False, True, None)
    assert result.detail == "patient_search: connection_error"


def test_read_timeout_is_transient(server: FhirServer, connect: Connect, created: AppointmentEvent):
    client, profile = connect(server.base_url, read_timeout=0.3)
    server.fail_next(1, status=0, delay=30, path_contains="/Appointment")  # held, then normal
    result = client.send_appointment(created, profile)
    assert (result.ok, result.transient) == (False, True)
    assert result.detail == "appointment: read_timeout"


def test_bearer_token_is_sent(connect: Connect, created: AppointmentEvent):
    with FhirServer(bearer_token="s3cr3t") as srv:
        client, profile = connect(srv.base_url, auth="bearer", token="s3cr3t")
        assert client.send_appointment(created, profile).ok
        assert {r.headers["authorization"] for r in srv.fhir_requests()} == {"Bearer s3cr3t"}
        wrong, profile = connect(srv.base_url, auth="bearer", token="nope")
        result = wrong.send_appointment(created, profile)
        assert (result.ok, result.transient, result.status_code) == (False, False, 401)
        assert result.detail == "patient_search: http_401 issues=login diagnostics=missing or invalid bearer token"


def test_oauth2_token_is_fetched_once_reused_and_refreshed_on_401(connect: Connect):
    with FhirServer(client_id="bridge", client_secret="cs-1") as srv:
        client, profile = connect(srv.base_url, auth="oauth2", token_url=srv.token_url,
                                  client_id="bridge", client_secret="cs-1")
        for name in ("02_booking_created.json", "04_booking_rescheduled.json"):
            assert client.send_appointment(event_from(name), profile).ok
        assert srv.tokens_issued == 1
        assert {r.headers["authorization"] for r in srv.fhir_requests()} == {"Bearer tok-1"}

        srv.revoke_tokens()  # the server forgets it before its expiry
        result = client.send_appointment(event_from("05_booking_cancelled.json"), profile)
        assert result.ok, result.detail
        assert srv.tokens_issued == 2
        statuses = [(r.status, r.headers["authorization"]) for r in srv.fhir_requests()[-3:]]
        assert statuses[0] == (401, "Bearer tok-1")
        assert statuses[1:] == [(200, "Bearer tok-2")] * 2
        assert srv.all("Appointment")[0]["status"] == "cancelled"


def test_oauth2_bad_client_secret_is_permanent_and_never_echoed(connect: Connect,
                                                                created: AppointmentEvent):
    with FhirServer(client_id="bridge", client_secret="right") as srv:
        client, profile = connect(srv.base_url, auth="oauth2", token_url=srv.token_url,
                                  client_id="bridge", client_secret="wrong")
        result = client.send_appointment(created, profile)
        assert (result.ok, result.transient, result.status_code) == (False, False, 401)
        assert result.detail == "patient_search: token http_401"
        assert "wrong" not in result.detail + result.response_excerpt
        assert srv.fhir_requests() == []


def test_oauth2_token_endpoint_down_is_transient(connect: Connect, created: AppointmentEvent):
    client, profile = connect("http://127.0.0.1:9/fhir", auth="oauth2", connect_timeout=2.0,
                              token_url=f"http://127.0.0.1:{free_port()}/token", client_id="c",
                              client_secret="s")
    result = client.send_appointment(created, profile)
    assert result.transient and result.detail == "patient_search: token: connection_error"


def test_logs_carry_no_phi(server: FhirServer, connect: Connect, created: AppointmentEvent,
                           caplog: pytest.LogCaptureFixture):
    client, profile = connect(server.base_url)
    with caplog.at_level(logging.DEBUG, logger="adapters"):
        assert client.send_appointment(created, profile).ok
        server.fail_next(1, 422, outcome("invalid", "Jordan Reyes"))
        client.send_appointment(created, profile)
    assert caplog.records
    assert [s for s in PHI_STRINGS if s in caplog.text] == []


def test_error_words_come_from_details_text_and_expression_too(server: FhirServer,
                                                               connect: Connect,
                                                               created: AppointmentEvent):
    client, profile = connect(server.base_url, patient_identifier_system=PATIENT_SYSTEM)
    body = {"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": "structure",
         "details": {"text": "String must contain non-whitespace content"},
         "expression": ["Patient.telecom[0].value"]},
        {"severity": "error", "code": "value",
         "details": {"text": "Invalid email jordan.reyes@example.com"},
         "diagnostics": "Invalid email jordan.reyes@example.com",
         "location": ["Patient.telecom[1]"]}]}
    server.fail_next(1, 400, body, path_contains="/Appointment")
    result = client.send_appointment(created, profile)
    assert not result.ok and not result.transient and result.status_code == 400
    # each issue once (diagnostics and details.text said the same), where it is, PHI masked
    assert result.detail == (
        "appointment: http_400 issues=structure,value diagnostics=String must contain "
        "non-whitespace content (at Patient.telecom[0].value); Invalid email [redacted] "
        "(at Patient.telecom[1])")
def test_oauth2_token_request_never_follows_a_redirect(connect: Connect, created: AppointmentEvent):
    """Issue 17 finding 7: a 307 from the token endpoint must not re-post client_secret."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    stolen: list[bytes] = []

    class Thief(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            stolen.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"access_token":"stolen","expires_in":3600}')

        def log_message(self, *args):
            pass

    class Redirector(Thief):
        def do_POST(self):  # noqa: N802
            self.send_response(307)
            self.send_header("Location", f"http://127.0.0.2:{thief.server_port}/token")
            self.send_header("Content-Length", "0")
            self.end_headers()

    thief = ThreadingHTTPServer(("127.0.0.2", 0), Thief)
    redirector = ThreadingHTTPServer(("127.0.0.1", 0), Redirector)
    for srv in (thief, redirector):
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        with FhirServer(client_id="bridge", client_secret="cs-1") as fhir:
            client, profile = connect(fhir.base_url, auth="oauth2", client_id="bridge",
                                      client_secret="cs-1",
                                      token_url=f"http://127.0.0.1:{redirector.server_port}/token")
            result = client.send_appointment(created, profile)
            assert fhir.fhir_requests() == []
    finally:
        for srv in (thief, redirector):
            srv.shutdown()
            srv.server_close()
    assert stolen == []
    assert not result.ok and result.detail == "patient_search: token http_307"
