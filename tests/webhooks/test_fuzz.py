"""Issue 17 fuzz suite (web side): hypothesis-made bodies against real gunicorn + a real worker.

Signed Cal.com webhooks of random shape (random JSON, and the real fixtures with fields
replaced by random values, including hostile text), and FHIR inbound bodies. Asserted: never
a 5xx, the web keeps answering, and every accepted webhook reaches a final state in the
ledger (done, skipped, unrouted, ignored or dead). Bounded: about 150 + 120 examples, no
shrinking database, so CI stays within a minute or two. More: CALEHR_FUZZ_EXAMPLES=2000.
"""

from __future__ import annotations

import json
import os

import requests
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.support import FUTURE_YEAR as YEAR
from tests.support import config_text, fixture_bytes, post_signed, wait_for

SCALE = int(os.environ.get("CALEHR_FUZZ_EXAMPLES", "0"))
FINAL = {b"done", b"skipped", b"unrouted", b"ignored", b"dead"}
TOKEN = "fhir-fuzz-token"
TRIGGERS = ["BOOKING_CREATED", "BOOKING_RESCHEDULED", "BOOKING_CANCELLED", "BOOKING_REQUESTED",
            "BOOKING_REJECTED", "BOOKING_NO_SHOW_UPDATED", "MEETING_ENDED", "PING",
            "RECORDING_READY", "X\x00", "", "\ud800"]
HOSTILE = st.sampled_from(["\x0bMSH#^~\\&#INJECTED", "\x1c\r", "\ud800", "\x00", "|^~\\&",
                           "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-12:00",
                           "2026-13-45T25:61:00Z", "1e999", "A" * 5000])
LEAF = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                 st.text(max_size=30), HOSTILE)
JSON = st.recursive(LEAF, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=20)
FIXTURES = ["02_booking_created.json", "03_booking_requested.json",
            "04_booking_rescheduled.json", "05_booking_cancelled.json"]


def _settings(examples: int):
    return settings(max_examples=SCALE or examples, deadline=None, database=None,
                    phases=[Phase.generate], suppress_health_check=list(HealthCheck))


@st.composite
def mutated_fixture(draw) -> bytes:
    data = json.loads(fixture_bytes(draw(st.sampled_from(FIXTURES))))
    data["triggerEvent"] = draw(st.sampled_from(TRIGGERS[:7] + [data["triggerEvent"]] * 3))
    p = data["payload"]
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.sampled_from(["payload", "attendee", "responses", "organizer", "root"]))
        attendees = p.get("attendees") if isinstance(p.get("attendees"), list) else [None]
        target = {"payload": p, "attendee": (attendees or [None])[0],
                  "responses": p.get("responses"), "organizer": p.get("organizer"),
                  "root": data}[where]
        if not isinstance(target, dict):
            target = p  # an earlier change replaced it
        key = draw(st.sampled_from(sorted(target) + ["extra"]))
        target[key] = draw(JSON)
    return json.dumps(data).encode()


@st.composite
def random_body(draw) -> bytes:
    shape = draw(st.sampled_from(["json", "object", "bytes"]))
    if shape == "bytes":
        return draw(st.binary(max_size=200))
    if shape == "object":
        return json.dumps({"triggerEvent": draw(st.sampled_from(TRIGGERS)),
                           "createdAt": draw(JSON), "payload": draw(JSON)}).encode()
    return json.dumps(draw(JSON)).encode()


def test_signed_webhooks_of_any_shape(stack, outbox, rclient):
    # a cancel whose booking never came waits order_wait_seconds, then is a dead letter
    stack.write_config(config_text(outbox, delivery="order_wait_seconds = 3.0")
                       + f'\n[inbound]\nfhir_token = "{TOKEN}"\n')
    base = stack.web()
    stack.worker()
    stack.beat()  # drains the due-set: order waits end in a dead letter, as in production
    accepted: list[str] = []
    statuses: dict[int, int] = {}

    @_settings(150)
    @given(body=st.one_of(mutated_fixture(), random_body()))
    def one(body: bytes) -> None:
        r = post_signed(base, body)
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
        assert r.status_code < 500, (r.status_code, r.text[:300], body[:300])
        assert r.headers["Content-Type"].startswith("application/json")
        if r.status_code == 202 and r.json().get("event_id"):
            accepted.append(r.json()["event_id"])

    one()
    print(f"webhook fuzz: statuses {statuses}, {len(accepted)} accepted")
    assert accepted, statuses  # the fixtures' mutations must reach the pipeline sometimes

    def unfinished() -> list[str]:
        states = [rclient.hget(f"calehr:event:{e}", "state") for e in accepted]
        return [e for e, s in zip(accepted, states, strict=True) if s not in FINAL]

    try:
        wait_for(lambda: not unfinished(), 120, 0.5, "every accepted body to reach a final state")
    except AssertionError:
        left = unfinished()
        states = {e: rclient.hgetall(f"calehr:event:{e}") for e in left[:5]}
        raise AssertionError(f"{len(left)} not final, e.g. "
                             f"{ {e: {k: v for k, v in d.items() if k != b'body'} for e, d in states.items()} }") from None
    assert requests.get(f"{base}/healthz", timeout=5).status_code == 200

    fhir_statuses: dict[int, int] = {}
    resource = st.fixed_dictionaries(
        {"resourceType": st.sampled_from(["Appointment", "Slot"])},
        optional={k: JSON for k in ("status", "identifier", "participant", "contained",
                                    "schedule", "start", "end", "id")})

    valid = {"resourceType": "Appointment", "status": "booked",
             "identifier": [{"system": "urn:x", "value": "A-1"}],
             "start": f"{YEAR}-05-06T09:00:00+02:00", "end": f"{YEAR}-05-06T09:45:00+02:00",
             "participant": [{"actor": {"identifier": {"value": "OKAFOR01"}},
                              "status": "accepted"}]}
    mutated = st.builds(lambda key, value: json.dumps({**valid, key: value}).encode(),
                        st.sampled_from(sorted(valid) + ["contained"]), JSON)

    @_settings(120)
    @given(body=st.one_of(resource.map(lambda r: json.dumps(r).encode()), mutated,
                          random_body()), kind=st.sampled_from(["Appointment", "Slot"]))
    def fhir(body: bytes, kind: str) -> None:
        r = requests.post(f"{base}/fhir/{kind}", data=body, timeout=10, headers={
            "Content-Type": "application/fhir+json", "Authorization": f"Bearer {TOKEN}"})
        fhir_statuses[r.status_code] = fhir_statuses.get(r.status_code, 0) + 1
        assert r.status_code < 500, (r.status_code, r.text[:300], body[:300])
        answer = r.json()["resourceType"]  # errors are OperationOutcomes; a create echoes the resource
        assert answer == "OperationOutcome" if r.status_code >= 400 else answer in ("Appointment", "Slot")

    fhir()
    print(f"FHIR inbound fuzz: statuses {fhir_statuses}")
    assert requests.get(f"{base}/healthz", timeout=5).status_code == 200
