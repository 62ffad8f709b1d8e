"""End to end against third-party peers from npm (tests/peers/hl7fhir/): a booking through
gunicorn and a Celery worker to Medplum's HL7 stack (MLLP) and Medplum's FHIR server."""

from __future__ import annotations

import json

import pytest

from tests.adapters.fhir.helpers import PATIENT_SYSTEM
from tests.factories import sim_messages
from tests.peers.hl7fhir_peers import start
from tests.support import config_text, fixture_bytes, free_port, mllp_target, post_signed, wait_for
from tests.worker.helpers import dead_letters

pytestmark = pytest.mark.slow


def test_commit_ack_then_application_error_from_medplum_becomes_a_dead_letter(
        stack, outbox, tmp_path, rclient):
    port = free_port()
    stack.write_config(config_text(outbox, extra_targets=mllp_target(port),
                                   routes='[[routes]]\ntargets = ["ehr"]\n'))
    out = tmp_path / "medplum"
    proc, _ = start("medplum-ehr", "mllp_ehr.cjs", [str(port), str(out), "--enhanced", "--ack",
                                                    "AE"], stack.log_dir)
    stack.procs.append(proc)
    base = stack.web()
    stack.worker()
    assert post_signed(base, fixture_bytes("02_booking_created.json")).status_code == 202
    dl = wait_for(lambda: dead_letters(rclient) or None, 30, message="the AE dead letter")[0]
    assert (dl["stage"], dl["error_code"], dl["error_text"]) == ("delivery", "ack_AE", "ACK AE")
    (attempt,) = json.loads(dl["attempts"])
    assert attempt["notes"] == ["protocol_error: CA in original mode (MSH-15/16 empty); "
                                "waiting for the application ACK"]
    assert len(sim_messages(out)) == 1  # sent once: the CA was not taken for success


def test_a_fhir_400_puts_the_servers_own_words_in_the_dead_letter(stack, outbox, tmp_path,
                                                                   rclient):
    proc, port = start("medplum-fhir", "fhir_server.cjs", ["0"], stack.log_dir)
    stack.procs.append(proc)
    url = f"http://127.0.0.1:{port}/fhir"
    target = (f'[[targets]]\nname = "fhir"\nkind = "fhir"\nurl = "{url}"\n'
              # not a FHIR uri (a space): Medplum's validator refuses the Patient
              f'patient_identifier_system = "{PATIENT_SYSTEM} site"\n')
    stack.write_config(config_text(outbox, extra_targets=target,
                                   routes='[[routes]]\ntargets = ["fhir"]\n'))
    base = stack.web()
    stack.worker()
    assert post_signed(base, fixture_bytes("02_booking_created.json")).status_code == 202
    dl = wait_for(lambda: dead_letters(rclient) or None, 30, message="the 400 dead letter")[0]
    assert dl["error_code"] == "http_400"
    assert dl["error_text"] == ("patient_create: http_400 issues=structure diagnostics=Invalid "
                                "uri format (at Patient.identifier[0].system)")
