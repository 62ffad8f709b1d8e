"""POST /webhooks/calcom through the Flask app, against real Redis, with the real Celery producer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from calehr.web import create_app
from core.config import Settings
from tests.support import PHI_STRINGS, SECRET, config_text, fixture_bytes, sign

BOOKINGS = ["02_booking_created.json", "03_booking_requested.json",
            "04_booking_rescheduled.json", "05_booking_cancelled.json"]


@pytest.fixture
def settings(tmp_path: Path, redis_url: str) -> Settings:
    text = config_text(tmp_path / "outbox", secrets=("whsec_new_rotated", SECRET))
    return Settings.from_toml(text, {"REDIS_URL": redis_url})


@pytest.fixture
def client(settings: Settings):
    # no dispatcher thread: what the request queued stays in the dispatch list for the test
    # (tests/webhooks/test_dispatch.py runs the dispatcher)
    return create_app(settings, run_dispatcher=False).test_client()


def queued(r: redis.Redis) -> list[str]:
    """The event ids the requests queued for the workers, and no Celery message besides."""
    assert r.llen("calehr") == 0
    return [i.decode() for i in r.lrange("calehr:events:dispatch", 0, -1)]


def post(client, body: bytes, signature: str | None = "auto", **headers):
    hdrs = {"Content-Type": "application/json", **headers}
    if signature == "auto":
        hdrs["X-Cal-Signature-256"] = sign(body)
    elif signature is not None:
        hdrs["X-Cal-Signature-256"] = signature
    return client.post("/webhooks/calcom", data=body, headers=hdrs)


@pytest.mark.parametrize("name", BOOKINGS)
def test_signed_fixture_is_stored_and_only_its_id_is_queued(client, rclient, name):
    resp = post(client, fixture_bytes(name))
    assert resp.status_code == 202, resp.get_json()
    data = resp.get_json()
    assert data["duplicate"] is False
    event_id = data["event_id"]
    assert queued(rclient) == [event_id]


def test_ping_answers_200_and_queues_nothing(client, rclient):
    resp = post(client, fixture_bytes("01_ping.json"))
    assert resp.status_code == 200
    assert resp.get_json()["trigger"] == "PING"
    assert queued(rclient) == []


def test_exact_duplicate_is_202_duplicate_and_queues_nothing_more(client, rclient):
    body = fixture_bytes("02_booking_created.json")
    first = post(client, body).get_json()
    second = post(client, body)
    assert second.status_code == 202
    assert second.get_json() == {"event_id": first["event_id"], "duplicate": True}
    assert len(queued(rclient)) == 1


def stored_keys(r) -> list[bytes]:
    """Everything in Redis except the metrics counters (a refusal is counted, nothing else)."""
    return [k for k in r.keys("*") if not k.startswith(b"calehr:metrics:")]


@pytest.mark.parametrize("signature", [None, "", "no-secret-provided", "00" * 32,
                                       sign(b"other body")])
def test_missing_or_wrong_signature_is_401(client, rclient, signature):
    resp = post(client, fixture_bytes("02_booking_created.json"), signature=signature)
    assert resp.status_code == 401
    assert resp.get_json()["error"] == "invalid_signature"
    assert queued(rclient) == []
    assert stored_keys(rclient) == []


def test_body_reserialised_after_signing_fails(client):
    body = fixture_bytes("02_booking_created.json")
    reserialised = json.dumps(json.loads(body)).encode()  # Python adds spaces
    resp = post(client, reserialised, signature=sign(body))
    assert resp.status_code == 401


def test_rotated_secret_is_accepted(client):
    body = fixture_bytes("03_booking_requested.json")
    resp = post(client, body, signature=sign(body, "whsec_new_rotated"))
    assert resp.status_code == 202


def test_signature_header_is_case_insensitive_hex(client):
    body = fixture_bytes("02_booking_created.json")
    assert post(client, body, signature=sign(body).upper()).status_code == 202


def test_not_json_is_400_with_reason(client, rclient):
    body = b'{"triggerEvent": "BOOKING_CREATED", '
    resp = post(client, body)
    assert resp.status_code == 400
    assert "not valid JSON" in resp.get_json()["detail"]
    assert queued(rclient) == []


@pytest.mark.parametrize("body", [b"[1,2,3]", b'"text"'])
def test_json_that_is_not_an_object_is_400(client, body):
    assert post(client, body).status_code == 400


def test_body_over_256_kib_is_413(client, rclient):
    body = b'{"triggerEvent":"BOOKING_CREATED","pad":"' + b"x" * (256 * 1024) + b'"}'
    resp = post(client, body)
    assert resp.status_code == 413
    assert resp.get_json()["error"] == "payload_too_large"
    assert stored_keys(rclient) == []


def test_booking_missing_fields_is_422_naming_them(client, rclient):
    data = json.loads(fixture_bytes("02_booking_created.json"))
    del data["payload"]["uid"]
    del data["payload"]["startTime"]
    body = json.dumps(data, separators=(",", ":")).encode()
    resp = post(client, body)
    assert resp.status_code == 422
    detail = resp.get_json()["detail"]
    assert "payload.uid" in detail and "payload.startTime" in detail
    assert queued(rclient) == []


def test_bad_time_is_422(client):
    data = json.loads(fixture_bytes("02_booking_created.json"))
    data["payload"]["startTime"] = "next tuesday"
    resp = post(client, json.dumps(data).encode())
    assert resp.status_code == 422
    assert "startTime" in resp.get_json()["detail"]


def test_unhandled_trigger_is_202_and_recorded_as_ignored(client, rclient):
    body = b'{"triggerEvent":"RECORDING_READY","createdAt":"2026-10-01T10:00:00.000Z","payload":{"downloadLink":"x"}}'
    resp = post(client, body)
    assert resp.status_code == 202
    data = resp.get_json()
    assert data["ignored"] is True
    assert queued(rclient) == []
    assert rclient.hget(f"calehr:event:{data['event_id']}", "state") == b"ignored"


def test_flat_meeting_ended_shape_is_accepted(client, rclient):
    body = json.dumps({
        "triggerEvent": "MEETING_ENDED", "id": 90211, "uid": "7xQm2kVd9RbTn4FgHs1LpA",
        "startTime": "2026-10-14T15:00:00.000Z", "endTime": "2026-10-14T15:30:00.000Z",
        "createdAt": "2026-10-07T16:41:12.000Z", "iCalUID": "7xQm2kVd9RbTn4FgHs1LpA@Cal.com",
        "iCalSequence": 0, "status": "ACCEPTED", "user": {"email": "a@example.org"},
        "attendees": [],
    }, separators=(",", ":")).encode()
    resp = post(client, body)
    assert resp.status_code == 202
    assert len(queued(rclient)) == 1


def test_flat_meeting_ended_missing_uid_is_422(client):
    body = b'{"triggerEvent":"MEETING_ENDED","startTime":"2026-10-14T15:00:00.000Z"}'
    resp = post(client, body)
    assert resp.status_code == 422
    assert "uid" in resp.get_json()["detail"]


def test_no_show_shape_is_validated(client):
    ok = b'{"triggerEvent":"BOOKING_NO_SHOW_UPDATED","createdAt":"2026-10-14T16:00:00.000Z","payload":{"message":"x","attendees":[{"email":"a@b.c","noShow":true}],"bookingUid":"7xQm2kVd9RbTn4FgHs1LpA","bookingId":90211}}'
    assert post(client, ok).status_code == 202
    bad = b'{"triggerEvent":"BOOKING_NO_SHOW_UPDATED","createdAt":"2026-10-14T16:00:00.000Z","payload":{"attendees":[]}}'
    resp = post(client, bad)
    assert resp.status_code == 422 and "bookingUid" in resp.get_json()["detail"]


def test_no_phi_readable_in_any_redis_value(client, rclient):
    for name in BOOKINGS:
        assert post(client, fixture_bytes(name)).status_code == 202
    dump = []
    for key in rclient.scan_iter("*"):
        kind = rclient.type(key).decode()
        if kind == "string":
            dump.append(rclient.get(key))
        elif kind == "hash":
            dump += list(rclient.hgetall(key).values())
        elif kind == "list":
            dump += rclient.lrange(key, 0, -1)
        elif kind == "set":
            dump += list(rclient.smembers(key))
        elif kind == "zset":
            dump += rclient.zrange(key, 0, -1)
    blob = b"\n".join(dump)  # the dispatch list too (the Celery messages: test_dispatch.py)
    assert blob, "nothing stored"
    for phi in PHI_STRINGS:
        assert phi.encode() not in blob, phi


def test_wrong_method_and_route_give_json_errors(client):
    assert client.get("/webhooks/calcom").status_code == 405
    assert client.get("/nope").get_json()["error"] == "not_found"
