"""Outbound SIU and inbound echoes against Medplum's HL7 stack (npm @medplum/hl7), a peer nobody
on this project wrote: tests/peers/hl7fhir/mllp_ehr.cjs (an EHR on Medplum's Hl7Connection, in
its enhanced mode it sends a commit ACK CA by itself before the application ACK) and
mllp_send.cjs (Medplum's Hl7Client)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import hl7
import pytest

from adapters.hl7v2 import MLLPClient
from tests.adapters.hl7v2.test_mllp_client import siu, target
from tests.factories import sim_messages
from tests.peers.hl7fhir_peers import PEER_DIR, node, start
from tests.support import Proc, wait_for

StartEhr = Callable[..., tuple[int, Path]]


@pytest.fixture
def medplum_ehr(tmp_path: Path) -> Iterator[StartEhr]:
    procs: list[Proc] = []

    def run(*flags: str) -> tuple[int, Path]:
        out = tmp_path / f"medplum-{len(procs)}"
        proc, port = start(f"medplum-ehr-{len(procs)}", "mllp_ehr.cjs", ["0", str(out), *flags],
                           tmp_path)
        procs.append(proc)
        return port, out

    yield run
    for proc in procs:
        proc.stop()


def test_commit_then_application_error_is_the_application_error(tmp_path, medplum_ehr):
    port, out = medplum_ehr("--enhanced", "--ack", "AE")
    result = MLLPClient(target(port)).send(siu(tmp_path), "CTRL0000000000000042")
    assert not result.ok and not result.transient and result.ack_code == "AE"
    assert result.notes == ("protocol_error: CA in original mode (MSH-15/16 empty); "
                            "waiting for the application ACK",)
    assert len(sim_messages(out)) == 1


def test_commit_then_accept_is_delivered_once_each(tmp_path, medplum_ehr):
    port, out = medplum_ehr("--enhanced")
    client = MLLPClient(target(port))
    results = [client.send(siu(tmp_path, f"MP{n:018d}"), f"MP{n:018d}") for n in range(3)]
    assert [(r.ok, r.ack_code) for r in results] == [(True, "AA")] * 3
    assert client.connects == 1
    assert [m["control_id"] for m in sim_messages(out)] == [f"MP{n:018d}" for n in range(3)]


def test_enhanced_target_with_no_application_ack_counts_the_commit(tmp_path, medplum_ehr):
    port, out = medplum_ehr("--enhanced", "--ack", "AE")  # the AE comes after the CA
    client = MLLPClient(target(port, ack_mode="enhanced", application_ack_type="NE"))
    first = client.send(siu(tmp_path, "ENH1"), "ENH1")
    assert first.ok and first.ack_code == "CA"
    # the AE that followed answers ENH1: if it is read now, it is discarded, never ENH2's answer
    second = client.send(siu(tmp_path, "ENH2"), "ENH2")
    assert second.ok and second.ack_code == "CA"
    assert all(n.startswith("ack_mismatch: discarded AE for MSA-2 'ENH1'") for n in second.notes)
    # the peer writes a message down after its commit ACK went out: wait for the file
    wait_for(lambda: [m["control_id"] for m in sim_messages(out)] == ["ENH1", "ENH2"], 10,
             message="both messages written by the peer")


def test_stray_ack_is_discarded_and_nothing_is_sent_twice(tmp_path, medplum_ehr):
    port, out = medplum_ehr("--stray")
    client = MLLPClient(target(port))
    results = [client.send(siu(tmp_path, c), c) for c in ("FIRST", "SECOND", "THIRD")]
    assert [r.ok for r in results] == [True] * 3
    assert results[1].notes == ("ack_mismatch: discarded AA for MSA-2 'FIRST', sent 'SECOND'",)
    assert results[2].notes == ("ack_mismatch: discarded AA for MSA-2 'SECOND', sent 'THIRD'",)
    assert [m["control_id"] for m in sim_messages(out)] == ["FIRST", "SECOND", "THIRD"]
    assert client.connects == 1


def medplum_send(port: int, tmp_path: Path, *messages: bytes) -> list[str]:
    """Medplum's Hl7Client sends each message and returns the ACK texts."""
    files = []
    for i, message in enumerate(messages):
        path = tmp_path / f"send-{i}.hl7"
        path.write_bytes(message)
        files.append(str(path))
    run = subprocess.run([node(), str(PEER_DIR / "mllp_send.cjs"), str(port), *files],
                         capture_output=True, timeout=60, cwd=PEER_DIR)
    assert run.returncode == 0, run.stderr.decode()
    return [json.loads(line)["ack"] for line in run.stdout.decode().splitlines()]


@pytest.mark.slow
def test_echoes_sent_by_medplums_client_reach_our_listener_as_no_block(stack, outbox, tmp_path):
    from datetime import UTC, datetime, timedelta

    from tests.adapters.hl7v2.listener import busy_events, start_listener
    from tests.support import config_text
    from tests.worker.test_ehr_changes import ehr_siu

    stack.write_config(config_text(outbox))
    base = stack.web()
    _, port = start_listener(stack)
    day = (datetime.now(UTC) + timedelta(days=20)).replace(hour=9, minute=0, second=0,
                                                           microsecond=0)
    acks = medplum_send(port, tmp_path,
                        ehr_siu("S12", "MP-ECHO-1", day),  # SCH-1 <our key>^CALCOM
                        ehr_siu("S12", "MP-OWN-1", day + timedelta(hours=2), placer="",
                                filler="E-555^EHR"))  # the EHR's own appointment
    assert [hl7.parse(a.replace("\n", "\r")).segment("MSA")[1][0] for a in acks] == ["AA", "AA"]
    assert [str(hl7.parse(a.replace("\n", "\r")).segment("MSA")[2]) for a in acks] == [
        "MP-ECHO-1", "MP-OWN-1"]
    events = busy_events(base)
    assert [e["start"] for e in events.values()] == [day + timedelta(hours=2)]
    assert "Wexford" not in stack.logs()
