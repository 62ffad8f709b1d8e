"""The EHR talks back about our own bookings: echoes, filler ids, EHR-side changes to Cal.com.

Real processes: gunicorn, a Celery worker, `calehr ehr-sim` as the EHR, `calehr mllp` as our
listener; Cal.com's API is the local fake that behaves as API v2 documents.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import hl7
import pytest

from tests.adapters.hl7v2.listener import busy_events, exchange, msa, start_listener
from tests.factories import sim_messages
from tests.support import config_text, fixture_bytes, free_port, mllp_target, post_signed, wait_for
from tests.worker.fake_calcom import API_KEY, FakeCalcom, api_booking
from tests.worker.helpers import dead_letters

pytestmark = pytest.mark.slow

KEY = "7xQm2kVd9RbTn4FgHs1LpA"  # the first booking uid: the appointment key and SCH-1
CREATED_UID, MOVED_UID = "7xQm2kVd9RbTn4FgHs1LpA", "Q3pW8nZk1sYc5VdTe7HbMu"
# times from the clock: blocks that ended long ago are purged, so a past slot would prove nothing
DAY = (datetime.now(UTC) + timedelta(days=30)).replace(hour=15, minute=0, second=0,
                                                        microsecond=0)


def body(name: str, start: datetime, **changes: object) -> bytes:
    """A fixture with its times moved to `start` (30 minutes long) and `changes` applied."""
    data = json.loads(fixture_bytes(name))
    data["payload"].update(startTime=_z(start), endTime=_z(start + timedelta(minutes=30)),
                           **changes)
    return json.dumps(data).encode()


def _z(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def _hl7(value: datetime) -> str:
    return value.strftime("%Y%m%d%H%M%S+0000")


def rescheduled_to(calcom, old_uid: str) -> str:
    """The uid of the booking Cal.com made for a reschedule (the fake records a POST before it
    has applied it, so wait for it)."""
    return wait_for(lambda: next((b["uid"] for b in list(calcom.bookings.values())
                                  if b.get("rescheduledFromUid") == old_uid), None), 10,
                    message=f"the booking that replaces {old_uid}")


def ehr_siu(event: str, control_id: str, start: datetime, *, placer: str = f"{KEY}^CALCOM",
            filler: str = "E-7781^EHR", status: str = "Booked",
            reason: str = "") -> bytes:
    """An SIU as an ORBIS-like EHR sends it for an appointment it stores (ours included)."""
    s, e = _hl7(start), _hl7(start + timedelta(minutes=30))
    segments = [
        f"MSH|^~\\&|ORBIS|HOSPITAL|CALEHR|CALCOM|{s}||SIU^{event}^SIU_S12|{control_id}|P|2.5.1",
        f"SCH|{placer}|{filler}||||{reason}|Normal^Normal^HL70277|30|min^minutes^ANS+|"
        f"^^30^{s}^{e}|||||||||||||{status}^{status}^HL70278",
        f"TQ1|1||||||{s}|{e}|||||30^min",
        "PID|1||MRN-4411^^^ORBIS^MR||Wexford^Hannelore||19620415|F",
        "RGS|1|A",
        f"AIP|1|A|OKAFOR01^Okafor^Amina^^^Dr.|D^Doctor^HL70182||{s}|||30|min",
    ]
    return ("\r".join(segments) + "\r").encode()


def config(outbox, port: int, calcom: FakeCalcom | None) -> str:
    text = config_text(outbox, extra_targets=mllp_target(port, timezone="UTC"),
                       routes='[[routes]]\ntargets = ["ehr"]\n')
    if calcom is not None:
        text = text.replace("[calcom]\n", f'[calcom]\napi_url = "{calcom.url}"\n'
                                          f'api_key = "{API_KEY}"\n', 1)
    return text


def delivery_state(rclient, event_id: str) -> tuple[str, str]:
    raw = rclient.hmget(f"calehr:delivery:{event_id}.ehr", "state", "reason")
    return tuple(v.decode() if v else "" for v in raw)


@pytest.fixture
def calcom():
    fake = FakeCalcom()
    yield fake
    fake.close()


def start_ehr(stack, kind: str, port: int, out, tmp_path):
    """The EHR: our `calehr ehr-sim`, or one on Medplum's HL7 stack (npm) that nobody here wrote.
    Returns how the EHR sends to our listener: messages in, MSA fields of each ACK out."""
    if kind == "ehr-sim":
        stack.ehr_sim(port, out)
        return lambda listener, *msgs: [msa(a) for a in exchange(listener, *msgs)]
    from tests.adapters.hl7v2.test_medplum_peers import medplum_send
    from tests.peers.hl7fhir_peers import start

    proc, _ = start("medplum-ehr", "mllp_ehr.cjs", [str(port), str(out), "--enhanced"],
                    stack.log_dir)
    stack.procs.append(proc)
    return lambda listener, *msgs: [
        next(s for s in a.replace("\n", "\r").split("\r") if s.startswith("MSA|")).split("|")
        for a in medplum_send(listener, tmp_path, *msgs)]


@pytest.mark.parametrize("ehr", ["ehr-sim", "medplum"])
def test_echo_is_no_block_filler_goes_back_and_ehr_changes_reach_calcom_once(
        stack, outbox, tmp_path, rclient, calcom, ehr):
    port = free_port()
    stack.write_config(config(outbox, port, calcom))
    sim_out = tmp_path / "sim"
    send = start_ehr(stack, ehr, port, sim_out, tmp_path)
    base = stack.web()
    stack.worker()
    _, listener = start_listener(stack)

    def exchange_acks(*msgs: bytes) -> list[list[str]]:
        return send(listener, *msgs)

    # 1. a patient books in Cal.com: S12 to the EHR
    assert post_signed(base, body("02_booking_created.json", DAY)).status_code == 202
    wait_for(lambda: len(sim_messages(sim_out)) == 1, 30, message="the S12 at the EHR")
    # 2. the EHR echoes it with its own filler id: AA, no busy block, no conflict
    (ack,) = exchange_acks(ehr_siu("S12", "ECHO-1", DAY))
    assert ack[1:3] == ["AA", "ECHO-1"]
    # an appointment the EHR booked itself still blocks (the feed works)
    (ack,) = exchange_acks(ehr_siu("S12", "OWN-1", DAY + timedelta(hours=3),
                                        placer="", filler="E-9000^EHR"))
    assert ack[1] == "AA"
    events = wait_for(lambda: busy_events(base) or None, 15, message="the EHR's own block")
    assert [e["start"] for e in events.values()] == [DAY + timedelta(hours=3)]
    assert dead_letters(rclient) == []

    # 3. the patient moves it in Cal.com: the S13 carries the EHR's filler id in SCH-2
    moved_at = DAY + timedelta(days=1)
    assert post_signed(base, body("04_booking_rescheduled.json", moved_at)).status_code == 202
    got = wait_for(lambda: len(m := sim_messages(sim_out)) == 2 and m, 30, message="the S13")
    s13 = hl7.parse(got[1]["raw"])
    assert str(s13.segment("MSH")[9]) == "SIU^S13^SIU_S12"
    assert str(s13.segment("SCH")[2]) == "E-7781^EHR"
    assert str(s13.segment("SCH")[1]) == f"{KEY}^CALCOM"
    # its echo (and a late echo of the S12) change nothing and call Cal.com for nothing
    acks = exchange_acks(ehr_siu("S13", "ECHO-2", moved_at), ehr_siu("S12", "ECHO-3", DAY))
    assert [a[1] for a in acks] == ["AA", "AA"]

    # Cal.com holds the booking as its API shows it
    calcom.put(api_booking(MOVED_UID, _z(moved_at), _z(moved_at + timedelta(minutes=30)),
                           _z(datetime.now(UTC)), rescheduled_from=CREATED_UID))

    # 4. the clinic moves it in the EHR: Cal.com reschedules, once
    ehr_moved_at = DAY + timedelta(days=2)
    (ack,) = exchange_acks(ehr_siu("S13", "MOVE-1", ehr_moved_at,
                                        reason="Clinic moved the slot"))
    assert ack[1] == "AA"
    posts = wait_for(lambda: calcom.posts() or None, 20, message="the reschedule at Cal.com")
    assert [p["path"] for p in posts] == [f"/v2/bookings/{MOVED_UID}/reschedule"]
    assert posts[0]["body"] == {"start": ehr_moved_at.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                                "reschedulingReason": "Clinic moved the slot"}
    new_uid = rescheduled_to(calcom, MOVED_UID)
    # Cal.com's webhook for it comes back: nothing new goes to the EHR
    answer = post_signed(base, body("04_booking_rescheduled.json", ehr_moved_at, uid=new_uid,
                                    rescheduleUid=MOVED_UID, iCalSequence=2))
    echo_id = answer.json()["event_id"]
    assert wait_for(lambda: delivery_state(rclient, echo_id)[0] == "skipped", 30,
                    message="the returning webhook skipped")
    assert delivery_state(rclient, echo_id)[1].startswith("echo:")

    # 5. the clinic cancels in the EHR, naming only its filler id: Cal.com cancels, once
    (ack,) = exchange_acks(ehr_siu("S15", "CANCEL-1", ehr_moved_at, placer="",
                                        status="Cancelled", reason="Doctor ill"))
    assert ack[1] == "AA"
    posts = wait_for(lambda: len(p := calcom.posts()) == 2 and p, 20,
                     message="the cancel at Cal.com")
    assert posts[1]["path"] == f"/v2/bookings/{new_uid}/cancel"
    assert posts[1]["body"] == {"cancellationReason": "Doctor ill"}
    answer = post_signed(base, body("05_booking_cancelled.json", ehr_moved_at, uid=new_uid,
                                    iCalSequence=3))
    cancel_id = answer.json()["event_id"]
    assert wait_for(lambda: delivery_state(rclient, cancel_id)[0] == "skipped", 30,
                    message="the returning cancel webhook skipped")
    # a repeat of the EHR's cancel is an echo of what it told us: no second call
    (ack,) = exchange_acks(ehr_siu("S15", "CANCEL-2", ehr_moved_at, status="Cancelled"))
    assert ack[1] == "AA"

    assert len(sim_messages(sim_out)) == 2  # S12 and S13 only: nothing came back as new
    assert len(calcom.posts()) == 2
    assert [e["start"] for e in busy_events(base).values()] == [DAY + timedelta(hours=3)]
    assert dead_letters(rclient) == []


def test_without_an_api_key_each_ehr_change_is_an_action_for_staff(stack, outbox, tmp_path,
                                                                   rclient):
    port = free_port()
    stack.write_config(config(outbox, port, None))
    sim_out = tmp_path / "sim"
    stack.ehr_sim(port, sim_out)
    base = stack.web()
    stack.worker()
    _, listener = start_listener(stack)
    assert post_signed(base, body("02_booking_created.json", DAY)).status_code == 202
    wait_for(lambda: len(sim_messages(sim_out)) == 1, 30, message="the S12 at the EHR")

    later = DAY + timedelta(days=3)
    acks = exchange(listener, ehr_siu("S13", "M-1", later),
                    ehr_siu("S26", "N-1", later, status="Noshow"))
    assert [msa(a)[1] for a in acks] == ["AA", "AA"]
    dls = wait_for(lambda: len(d := dead_letters(rclient)) == 2 and d, 15,
                   message="two action-needed items")
    by_event = {d["message_event"]: d for d in dls}
    moved, absent = by_event["S13"], by_event["S26"]
    assert {d["stage"] for d in dls} == {"ehr_change"}
    assert {d["error_code"] for d in dls} == {"no_api_key"}
    assert moved["appointment_key"] == KEY and moved["target"] == "ehr"
    assert (f"reschedule booking {CREATED_UID} to {_z(later)}" in moved["error_text"])
    assert f"mark the attendee of booking {CREATED_UID} as no-show" in absent["error_text"]
    assert "Wexford" not in moved["error_text"] + absent["error_text"]
    assert busy_events(base) == {}  # our own appointment never blocks

    # the CLI shows them to staff
    run = subprocess.run([sys.executable, "-m", "calehr.cli", "deadletter", "list", "--stage",
                          "ehr_change"], capture_output=True, text=True, env=stack.env,
                         timeout=60)
    assert run.returncode == 0, run.stderr
    assert all(d["id"] in run.stdout for d in dls)


def test_fhir_ehr_speaking_of_our_appointment_is_no_block_and_its_cancel_is_an_action(
        stack, outbox, rclient):
    from tests.adapters.fhir.fhir_server import FhirServer
    from tests.adapters.fhir.helpers import PATIENT_SYSTEM

    token = "fhir-inbound-token"
    with FhirServer() as server:
        target = (f'[[targets]]\nname = "fhir"\nkind = "fhir"\nurl = "{server.base_url}"\n'
                  f'patient_identifier_system = "{PATIENT_SYSTEM}"\n')
        stack.write_config(config_text(outbox, extra_targets=target,
                                       routes='[[routes]]\ntargets = ["fhir"]\n')
                           + f'\n[inbound]\nfhir_token = "{token}"\n')
        base = stack.web()
        stack.worker()
        assert post_signed(base, body("02_booking_created.json", DAY)).status_code == 202
        sent = wait_for(lambda: server.all("Appointment") or None, 30,
                        message="the Appointment at the FHIR server")[0]
        assert sent["identifier"][0] == {"system": "urn:calcom:appointment", "value": KEY}

        def put(resource: dict) -> int:
            import requests

            return requests.put(f"{base}/fhir/Appointment/{resource['id']}",
                                json=resource, timeout=10,
                                headers={"Authorization": f"Bearer {token}"}).status_code

        # the EHR hands our own Appointment back (as a subscription or an interface would)
        assert put(sent) in (200, 201)
        assert busy_events(base) == {} and dead_letters(rclient) == []
        # then cancels it on its side: no key for Cal.com, so a person is told what to do
        assert put({**sent, "status": "cancelled",
                    "cancelationReason": {"text": "Doctor ill"}}) == 200
        dl = wait_for(lambda: dead_letters(rclient) or None, 15, message="the action item")[0]
        assert (dl["stage"], dl["error_code"], dl["target"]) == ("ehr_change", "no_api_key",
                                                                  "fhir")
        assert f"cancel booking {CREATED_UID}" in dl["error_text"]
        assert "Doctor ill" not in dl["error_text"]
        assert busy_events(base) == {}


def test_a_move_then_a_cancel_in_the_ehr_reach_the_new_booking_and_nothing_comes_back(
        stack, outbox, tmp_path, rclient, calcom):
    port = free_port()
    stack.write_config(config(outbox, port, calcom))
    sim_out = tmp_path / "sim"
    stack.ehr_sim(port, sim_out)
    base = stack.web()
    stack.worker()
    _, listener = start_listener(stack)
    assert post_signed(base, body("02_booking_created.json", DAY)).status_code == 202
    wait_for(lambda: len(sim_messages(sim_out)) == 1, 30, message="the S12 at the EHR")
    calcom.put(api_booking(CREATED_UID, _z(DAY), _z(DAY + timedelta(minutes=30)),
                           _z(datetime.now(UTC))))

    # the clinic moves it and cancels it before Cal.com's RESCHEDULED webhook is back
    moved_at = DAY + timedelta(days=2)
    acks = exchange(listener, ehr_siu("S13", "MOVE-1", moved_at),
                    ehr_siu("S15", "CANCEL-1", moved_at, status="Cancelled"))
    assert [msa(a)[1] for a in acks] == ["AA", "AA"]
    posts = wait_for(lambda: len(p := calcom.posts()) == 2 and p, 30,
                     message="the reschedule and the cancel at Cal.com")
    new_uid = rescheduled_to(calcom, CREATED_UID)
    assert [p["path"] for p in posts] == [f"/v2/bookings/{CREATED_UID}/reschedule",
                                          f"/v2/bookings/{new_uid}/cancel"]
    assert calcom.bookings[new_uid]["status"] == "cancelled"

    # Cal.com's webhooks come back, the RESCHEDULED one after the EHR's cancel: neither is sent
    for name, extra in (("04_booking_rescheduled.json", {"rescheduleUid": CREATED_UID,
                                                         "iCalSequence": 1}),
                        ("05_booking_cancelled.json", {"iCalSequence": 2})):
        answer = post_signed(base, body(name, moved_at, uid=new_uid, **extra))
        event_id = answer.json()["event_id"]
        wait_for(lambda eid=event_id: delivery_state(rclient, eid)[0] == "skipped", 30,
                 message=f"{name} skipped for the EHR")
        assert delivery_state(rclient, event_id)[1].startswith("echo:")
    assert len(sim_messages(sim_out)) == 1  # no S13 reinstated what the clinic cancelled
    assert len(calcom.posts()) == 2 and dead_letters(rclient) == []
