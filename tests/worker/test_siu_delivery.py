"""Issue 3 end to end: signed fixtures through gunicorn and a Celery worker to an MLLP EHR."""

from __future__ import annotations

import json

import hl7
import pytest

from tests.factories import sim_messages
from tests.support import (
    PHI_STRINGS,
    config_text,
    fixture_bytes,
    free_port,
    mllp_target,
    post_signed,
    wait_for,
)
from tests.worker.helpers import dead_letters

pytestmark = pytest.mark.slow

FLOW = ["02_booking_created.json", "04_booking_rescheduled.json", "05_booking_cancelled.json"]


def siu_target(port: int, extra: str = "") -> str:
    return mllp_target(port, timezone="Europe/Berlin", read_timeout="2.0",
                       extra=f'charset = "8859/1"\n{extra}')


def test_created_rescheduled_cancelled_arrive_as_s12_s13_s15(stack, outbox, tmp_path):
    port = free_port()
    stack.write_config(config_text(outbox, extra_targets=siu_target(port),
                                   routes='[[routes]]\ntargets = ["ehr", "files"]\n'))
    sim_out = tmp_path / "sim"
    stack.ehr_sim(port, sim_out)
    base = stack.web()
    stack.worker()
    for name in FLOW:
        assert post_signed(base, fixture_bytes(name)).status_code == 202
    got = wait_for(lambda: (m := sim_messages_latin1(sim_out)) and len(m) >= 3 and m, 60,
                   message="three SIU messages at the simulator")
    parsed = [hl7.parse(m) for m in got]
    assert [str(p.segment("MSH")[9]) for p in parsed] == [
        "SIU^S12^SIU_S12", "SIU^S13^SIU_S12", "SIU^S15^SIU_S12"]
    assert {str(p["SCH.F1.R1.C1"]) for p in parsed} == {"7xQm2kVd9RbTn4FgHs1LpA"}
    assert [str(p["SCH.F25.R1.C1"]) for p in parsed] == ["Booked", "Booked", "Cancelled"]
    assert str(parsed[1]["TQ1.F7"]) == "20261016213000+0200"  # 19:30Z in Berlin summer time
    assert len({str(p.segment("MSH")[10]) for p in parsed}) == 3
    # the file-drop target got the same three, in order, as files
    files = wait_for(lambda: len(f := sorted(outbox.glob("*.hl7"))) >= 3 and f, 30,
                     message="three files in the outbox")
    events = [str(hl7.parse(f.read_bytes().decode())["MSH.F9.R1.C2"]) for f in files]
    assert events == ["S12", "S13", "S15"]
    # a full run's logs (web, worker) carry ids and codes, never the patient
    logs = "".join(p.output() for p in stack.procs if p.name in ("web", "worker"))
    assert '"event_id"' in logs and '"control_id"' in logs
    assert [s for s in PHI_STRINGS if s in logs] == []


def sim_messages_latin1(out) -> list[str]:
    return [p.read_bytes().decode("latin-1") for p in sorted(out.glob("*.hl7"))]


def test_ack_with_wrong_control_id_is_retried_then_dead_lettered(stack, outbox, tmp_path, rclient):
    port = free_port()
    stack.write_config(config_text(outbox, extra_targets=siu_target(port, "max_attempts = 3"),
                                   routes='[[routes]]\ntargets = ["ehr"]\n'))
    sim_out = tmp_path / "sim"
    stack.ehr_sim(port, sim_out, extra=("--mismatch",))
    base = stack.web()
    stack.worker()
    stack.beat()
    post_signed(base, fixture_bytes("02_booking_created.json"))
    dls = wait_for(lambda: dead_letters(rclient), 60, message="a dead letter after 3 mismatches")
    assert dls[0]["error_code"] == "retries_exhausted"
    assert "ack_mismatch" in dls[0]["error_text"]
    attempts = json.loads(dls[0]["attempts"])
    assert [a["outcome"] for a in attempts] == ["transient"] * 3
    assert {m["control_id"] for m in sim_messages(sim_out)} == {attempts[0]["control_id"]}


def test_ae_keeps_the_err_segment_encrypted_for_the_dead_letter(stack, outbox, tmp_path, rclient):
    port = free_port()
    stack.write_config(config_text(outbox, extra_targets=siu_target(port),
                                   routes='[[routes]]\ntargets = ["ehr"]\n'))
    stack.ehr_sim(port, tmp_path / "sim", ack="AE")
    base = stack.web()
    stack.worker()
    post_signed(base, fixture_bytes("02_booking_created.json"))
    dl = wait_for(lambda: dead_letters(rclient), 30, message="an AE dead letter")[0]
    assert dl["error_text"] == "ACK AE ERR 207"
    raw = rclient.hget(f"calehr:delivery:{dl['delivery_id']}", "response")
    assert raw and b"ERR" not in raw  # stored, but only encrypted
    from calehr.producer import make_client_runtime

    rt = make_client_runtime(stack.settings())
    assert "ERR|||207" in rt.ledger.response(dl["delivery_id"])


def test_meeting_ended_is_s14_complete_only_where_a_target_opts_in(stack, outbox, tmp_path,
                                                                  rclient):
    from tests.factories import meeting_ended_body

    port = free_port()
    stack.write_config(config_text(outbox,
                                   extra_targets=siu_target(port, "send_meeting_ended = true"),
                                   routes='[[routes]]\ntargets = ["ehr", "files"]\n'))
    sim_out = tmp_path / "sim"
    stack.ehr_sim(port, sim_out)
    base = stack.web()
    stack.worker()
    assert post_signed(base, fixture_bytes("02_booking_created.json")).status_code == 202
    wait_for(lambda: len(sim_messages_latin1(sim_out)) == 1 and list(outbox.glob("*.hl7")), 60,
             message="the S12 at both targets")
    ended = post_signed(base, meeting_ended_body())
    assert ended.status_code == 202
    got = wait_for(lambda: len(m := sim_messages_latin1(sim_out)) >= 2 and m, 60,
                   message="the S14 at the MLLP target")
    last = hl7.parse(got[-1])
    assert str(last.segment("MSH")[9]) == "SIU^S14^SIU_S12"
    assert str(last["SCH.F25.R1.C1"]) == "Complete"
    event_id = ended.json()["event_id"]
    wait_for(lambda: rclient.hget(f"calehr:event:{event_id}", "state") == b"done", 30,
             message="the meeting-ended event done")
    assert len(list(outbox.glob("*.hl7"))) == 1  # the file target did not opt in
    # sent again by Cal.com's cron: nothing new
    assert post_signed(base, meeting_ended_body()).json()["duplicate"] is True
    assert len(sim_messages_latin1(sim_out)) == 2


def test_meeting_ended_by_default_is_recorded_and_not_sent(stack, outbox, rclient):
    from tests.factories import meeting_ended_body

    stack.write_config(config_text(outbox))
    base = stack.web()
    stack.worker()
    assert post_signed(base, fixture_bytes("02_booking_created.json")).status_code == 202
    wait_for(lambda: list(outbox.glob("*.hl7")), 60, message="the S12")
    event_id = post_signed(base, meeting_ended_body()).json()["event_id"]
    state = wait_for(lambda: (s := rclient.hmget(f"calehr:event:{event_id}", "state", "reason"))
                     and s[0] == b"skipped" and s, 30, message="the event skipped")
    assert state[1] == b"not_mapped:meeting_ended"
    assert len(list(outbox.glob("*.hl7"))) == 1


def _attempts(rclient, prefix: str = "calehr") -> dict[str, list[dict]]:
    out = {}
    for key in rclient.scan_iter(f"{prefix}:delivery:*:attempts"):
        out[key.decode()] = [json.loads(a) for a in rclient.lrange(key, 0, -1)]
    return out


def test_commit_ack_then_application_error_becomes_a_dead_letter(stack, outbox, tmp_path,
                                                                 rclient):
    port = free_port()
    stack.write_config(config_text(outbox, extra_targets=siu_target(port),
                                   routes='[[routes]]\ntargets = ["ehr"]\n'))
    stack.ehr_sim(port, tmp_path / "sim", ack="AE", extra=("--commit-first",))
    base = stack.web()
    stack.worker()
    post_signed(base, fixture_bytes("02_booking_created.json"))
    dl = wait_for(lambda: dead_letters(rclient), 30, message="an AE dead letter behind a CA")[0]
    assert (dl["error_code"], dl["error_text"]) == ("ack_AE", "ACK AE ERR 207")
    attempts = json.loads(dl["attempts"])
    assert [a["outcome"] for a in attempts] == ["permanent"]
    assert attempts[0]["notes"] == ["protocol_error: CA in original mode (MSH-15/16 empty); "
                                    "waiting for the application ACK"]
    assert "protocol_error: CA in original mode" in stack.logs()


def test_commit_ack_then_accept_is_delivered_once_and_strays_are_not_resent(stack, outbox,
                                                                          tmp_path, rclient):
    port = free_port()
    stack.write_config(config_text(outbox, extra_targets=siu_target(port),
                                   routes='[[routes]]\ntargets = ["ehr"]\n'))
    sim_out = tmp_path / "sim"
    stack.ehr_sim(port, sim_out, extra=("--commit-first", "--stray"))
    base = stack.web()
    stack.worker(concurrency=1)
    for name in FLOW[:2]:
        assert post_signed(base, fixture_bytes(name)).status_code == 202
    attempts = wait_for(lambda: len(a := _attempts(rclient)) == 2
                        and all(v and v[-1]["outcome"] == "ok" for v in a.values()) and a, 60,
                        message="both deliveries acknowledged")
    assert sorted(len(v) for v in attempts.values()) == [1, 1]  # one attempt each
    got = sim_messages(sim_out)
    assert sorted(m["control_id"] for m in got) == sorted(v[0]["control_id"]
                                                          for v in attempts.values())
    for entries in attempts.values():
        notes = entries[0]["notes"]
        assert notes[0].startswith("ack_mismatch: discarded AA for MSA-2 ")
        assert notes[1].startswith("protocol_error: CA in original mode")
    assert dead_letters(rclient) == []
    assert "ack_mismatch: discarded AA" in stack.logs()
