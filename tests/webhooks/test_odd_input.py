"""Issue 17 finding 6: odd input is a 4xx with a JSON error naming the problem, never a 500.

Through real gunicorn: the Cal.com receiver, FHIR inbound and the console login.
"""

from __future__ import annotations

import json
import socket
import time

import pytest
import requests

from tests.deadletter.console_support import ConsoleClient, users_toml
from tests.support import FUTURE_YEAR as YEAR
from tests.support import SECRET, config_text, fixture_bytes, post_signed, sign

TOKEN = "fhir-inbound-odd-token"


@pytest.fixture
def base(stack, outbox) -> str:
    stack.write_config(config_text(outbox) + f'\n[inbound]\nfhir_token = "{TOKEN}"\n'
                       + users_toml())
    return stack.web()


def _json_error(resp: requests.Response, status: int, *words: str) -> dict:
    assert resp.status_code == status, (resp.status_code, resp.text[:300])
    data = resp.json()
    text = json.dumps(data)
    for word in words:
        assert word in text, (word, text)
    return data


def test_webhook_odd_input_is_4xx_json(base):
    body = fixture_bytes("02_booking_created.json")
    bad_sig = requests.post(f"{base}/webhooks/calcom", data=body, timeout=10, headers={
        "Content-Type": "application/json", "X-Cal-Signature-256": b"\xc3\xa9" + b"0" * 62})
    _json_error(bad_sig, 401, "invalid_signature")
    deep = b'{"triggerEvent":"BOOKING_CREATED","payload":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    _json_error(post_signed(base, deep), 400, "JSON")
    digits = b'{"triggerEvent":"BOOKING_CREATED","x":' + b"9" * 5000 + b"}"
    _json_error(post_signed(base, digits), 400, "JSON")
    data = json.loads(body)
    for when in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:00:00-12:00"):
        data["payload"]["startTime"] = when
        early = json.dumps(data).encode()
        _json_error(post_signed(base, early), 422, "startTime")
    data = json.loads(body)
    data["createdAt"] = "0001-01-01T00:00:00+14:00"
    _json_error(post_signed(base, json.dumps(data).encode()), 422, "createdAt")
    for n in range(30):  # Issue 17 finding 7: a signed body cannot mint metric series
        odd = json.dumps({"triggerEvent": f"MADE_UP_{n}", "payload": {}}).encode()
        assert post_signed(base, odd).status_code in (202, 422)
    metrics = requests.get(f"{base}/metrics", timeout=10).text
    assert "MADE_UP_" not in metrics
    assert 'calehr_webhooks_received_total{outcome="ignored",trigger="other"} 30.0' in metrics
    ping = fixture_bytes("01_ping.json")  # and a right signature still passes
    assert requests.post(f"{base}/webhooks/calcom", data=ping, timeout=10, headers={
        "Content-Type": "application/json", "X-Cal-Signature-256": sign(ping, SECRET)}
    ).status_code == 200


def _fhir(base: str, path: str, resource: dict | bytes) -> requests.Response:
    raw = resource if isinstance(resource, bytes) else json.dumps(resource).encode()
    return requests.post(f"{base}/fhir/{path}", data=raw, timeout=10, headers={
        "Content-Type": "application/fhir+json", "Authorization": f"Bearer {TOKEN}"})


APPOINTMENT = {"resourceType": "Appointment", "status": "booked",
               "identifier": [{"system": "urn:x", "value": "A-1"}],
               "start": f"{YEAR}-05-06T09:00:00+02:00", "end": f"{YEAR}-05-06T09:45:00+02:00",
               "participant": [{"actor": {"identifier": {"value": "OKAFOR01"}},
                                "status": "accepted"}]}
SLOT = {"resourceType": "Slot", "status": "busy", "identifier": [{"value": "S-1"}],
        "schedule": {"reference": "#s"}, "start": f"{YEAR}-05-06T09:00:00+02:00",
        "end": f"{YEAR}-05-06T09:45:00+02:00",
        "contained": [{"resourceType": "Schedule", "id": "s",
                       "actor": [{"identifier": {"value": "OKAFOR01"}}]}]}


WRONG_TYPES = [
    ("Appointment", {"identifier": 5}, "Appointment.identifier"),
    ("Appointment", {"identifier": {"value": "x"}}, "Appointment.identifier"),
    ("Appointment", {"participant": "OKAFOR01"}, "Appointment.participant"),
    ("Appointment", {"participant": {"actor": {}}}, "Appointment.participant"),
    ("Slot", {"contained": 7}, "Slot.contained"),
    ("Slot", {"contained": [{"resourceType": "Schedule", "actor": "OKAFOR01"}]},
     "Slot.contained.actor"),
    ("Appointment", {"start": "0001-01-01T00:00:00+14:00"}, "Appointment.start"),
    ("Appointment", {"end": "9999-12-31T23:00:00-12:00"}, "Appointment.end"),
]


def test_fhir_inbound_wrong_types_are_422_and_deep_json_400(base):
    for path, changes, names in WRONG_TYPES:
        resource = {**(APPOINTMENT if path == "Appointment" else SLOT), **changes}
        data = _json_error(_fhir(base, path, resource), 422, names)
        assert data["resourceType"] == "OperationOutcome"
def test_fhir_inbound_deep_json_is_400(base):
    deep = b'{"resourceType":"Appointment","x":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    _json_error(_fhir(base, "Appointment", deep), 400, "JSON")
    assert _fhir(base, "Appointment", APPOINTMENT).status_code == 201  # and serves on


def test_console_login_odd_input_is_4xx(base):
    c = ConsoleClient(base)
    c.get("/console/login")
    c.token = "\u00e9t\u00e9-not-ascii"
    r = c.post("/console/login", {"username": "ada", "password": "admin-pass-12345"})
    assert r.status_code == 400
    c.get("/console/login")
    r = c.post("/console/login", {"username": "ada", "password": "admin-pass-12345",
                                  "next": "/console/audit\r\nSet-Cookie: x=1"},
               allow_redirects=False)
    assert r.status_code == 302 and r.headers["Location"] == "/console/deadletters"
    assert "x=1" not in r.headers.get("Set-Cookie", "")
    r = c.get("/console/login?next=/console/x%0d%0aLocation:%20https://evil.example",
              allow_redirects=False)
    assert r.status_code == 302 and r.headers["Location"] == "/console/deadletters"


def test_console_refuses_a_large_upload_without_reading_it(base):
    port = int(base.rsplit(":", 1)[1])
    size = 20 * 1024 * 1024
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /console/login HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/x-www-form-urlencoded\r\n"
                     + f"Content-Length: {size}\r\n\r\n".encode() + b"a=" + b"x" * 65536)
        started = time.monotonic()
        answer = b""
        while b"\r\n\r\n" not in answer:  # the answer comes with 19.9 MiB never sent
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert time.monotonic() - started < 10  # the other 19.9 MiB never come

