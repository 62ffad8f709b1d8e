"""Several EHR targets: each is delivered, retried and ordered on its own; unrouted is visible."""

from __future__ import annotations

import json

import pytest

from tests.adapters.fhir.fhir_server import FhirServer
from tests.factories import sim_messages
from tests.support import config_text, fixture_bytes, free_port, post_signed, wait_for

pytestmark = pytest.mark.slow

FLOW = ["02_booking_created.json", "04_booking_rescheduled.json", "05_booking_cancelled.json"]


def two_targets(mllp_port: int, fhir_url: str) -> str:
    return f"""
[[targets]]
name = "ehr"
kind = "mllp"
port = {mllp_port}
read_timeout = 2.0

[[targets]]
name = "fhir"
kind = "fhir"
url = "{fhir_url}"
timezone = "America/Chicago"
patient_identifier_system = "urn:oid:2.16.840.1.113883.3.7777.1"
connect_timeout = 1.0
read_timeout = 2.0
"""


def test_fhir_target_down_does_not_hold_back_the_mllp_target(stack, outbox, tmp_path):
    fhir = FhirServer().start()
    try:
        fhir.fail_next(10**6, status=503)  # the FHIR EHR is down
        port = free_port()
        stack.write_config(config_text(outbox, extra_targets=two_targets(port, fhir.base_url),
                                       routes='[[routes]]\ntargets = ["ehr", "fhir"]\n'))
        stack.ehr_sim(port, tmp_path / "sim")
        base = stack.web()
        stack.worker()
        stack.beat()
        for name in FLOW:
            assert post_signed(base, fixture_bytes(name)).status_code == 202
        got = wait_for(lambda: len(m := sim_messages(tmp_path / "sim")) >= 3 and m, 30,
                       message="the MLLP EHR to get all three while FHIR is down")
        assert [m["event"] for m in got] == ["S12", "S13", "S15"]
        assert fhir.all("Appointment") == []
        wait_for(lambda: len(fhir.fhir_requests()) >= 1, 30, 0.1,  # it was tried, and failed
                 "the FHIR target to be tried")  # (its worker may still be on its way)

        fhir.faults.clear()  # the FHIR EHR is back
        appts = wait_for(lambda: (a := fhir.all("Appointment")) and a[0]["status"] == "cancelled"
                         and a, 60, 0.2, "the FHIR Appointment to end cancelled")
        assert len(appts) == 1
        assert appts[0]["start"].startswith("2026-10-16T14:30:00")  # the rescheduled time
        assert appts[0]["identifier"][0]["value"] == "7xQm2kVd9RbTn4FgHs1LpA"
        assert len(fhir.all("Patient")) == 1
    finally:
        fhir.stop()


def test_route_by_event_type_and_unrouted_is_recorded(stack, outbox, rclient, tmp_path):
    routes = '[[routes]]\nevent_types = ["follow-up-visit"]\ntargets = ["files"]\n'
    stack.write_config(config_text(outbox, routes=routes))
    base = stack.web()
    stack.worker()
    consult = post_signed(base, fixture_bytes("02_booking_created.json")).json()["event_id"]
    follow = fixture_bytes("03_booking_requested.json")
    follow_id = post_signed(base, follow).json()["event_id"]
    wait_for(lambda: rclient.hget(f"calehr:event:{consult}", "state") == b"unrouted", 30,
             message="the consult to be recorded as unrouted")
    audit = [json.loads(e) for e in rclient.lrange("calehr:audit:system", 0, -1)]
    assert any(e["action"] == "event.unrouted" and e["record"] == consult for e in audit)
    assert json.loads(follow)["payload"]["type"] == "follow-up-visit"
    files = wait_for(lambda: list(outbox.glob("*.hl7")), 30, message="the follow-up in the outbox")
    assert len(files) == 1 and b"Lk9vR2mXc4TqB7nYp1WdZe" in files[0].read_bytes()
    wait_for(lambda: rclient.hget(f"calehr:event:{follow_id}", "state") == b"done", 30,
             message="the follow-up to be done")
