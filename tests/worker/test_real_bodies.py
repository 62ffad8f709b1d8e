"""Bodies made by Cal.com's own code (tests/fixtures/calcom/README.md), signed byte-exact, through
gunicorn and real Celery workers to a file target: one appointment key and one SCH-1 for each
booking's whole life, whatever identifiers each body carries; notes only from the booker; Cal Video
no-shows; `calehr map` printing what the worker sent."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import hl7
import pytest

from tests.factories import praxis_nord, with_changes
from tests.support import FIXTURES, ROOT, config_text, fixture_bytes, post_signed, wait_for
from tests.worker.helpers import dead_letters

pytestmark = pytest.mark.slow

SEGMENT = re.compile(r"^[A-Z][A-Z0-9]{2}\|")
FINAL = (b"done", b"skipped", b"ignored", b"unrouted", b"dead")
VIDEO_UID = "m3x55KsT8qx2SK2HFDi4zV"
REAL_PHI = ("Jürgen", "Öztürk", "j.oeztuerk-baecker@example.de", "+4915112345678", "1979-02-28",
            "A123456789", "MRT-Befund", "Helga", "Weiß")
# the host marks the Cal Video guest absent after Cal.com already did: same news, sent once
VIDEO_NO_SHOW_BY_HOST = with_changes(fixture_bytes("BOOKING_NO_SHOW_UPDATED.json"),
                                     bookingUid=VIDEO_UID, bookingId=90210)


def taken_back() -> bytes:
    """The host takes the no-show back a few minutes later (noShow false)."""
    data = json.loads(fixture_bytes("BOOKING_NO_SHOW_UPDATED.json"))
    data["createdAt"] = "2026-11-29T22:31:00.000Z"
    data["payload"]["attendees"][0]["noShow"] = False
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


# flow -> (bodies in Cal.com's order, appointment key, [(SIU event, SCH-25)] the EHR gets)
FLOWS: dict[str, tuple[list[str | bytes], str, list[tuple[str, str]]]] = {
    "reschedule without iCalUID, cancel with it": (
        ["BOOKING_CREATED.json", "BOOKING_RESCHEDULED.json", "BOOKING_CANCELLED.json"],
        "b8nxY3NhrSVA36YRNA8SpK", [("S12", "Booked"), ("S13", "Booked"), ("S15", "Cancelled")]),
    "request rejected": (
        ["BOOKING_REQUESTED.json", "BOOKING_REJECTED.json"],
        "2XnMqTQJuZoNWSEdH9gyXV", [("S12", "Pending"), ("S15", "Cancelled")]),
    "request confirmed, no-show, taken back": (
        ["BOOKING_REQUESTED--confirm-flow.json", "BOOKING_CREATED--after-confirmation.json",
         "BOOKING_NO_SHOW_UPDATED.json", taken_back()],
        "qnGnk2ny5q43bExHjgVgdy", [("S12", "Pending"), ("S14", "Booked"), ("S26", "Noshow"),
                                   ("S14", "Booked")]),
    "paid, then cancelled": (
        ["BOOKING_PAYMENT_INITIATED.json", "BOOKING_PAID.json", "BOOKING_CREATED--paid.json",
         "BOOKING_CANCELLED--paid.json"],
        "3dmiFVFBJGQBimsVTtnNFu", [("S12", "Booked"), ("S15", "Cancelled")]),
    "Cal Video no-shows": (
        ["BOOKING_CREATED--video.json", "AFTER_HOSTS_CAL_VIDEO_NO_SHOW.json",
         "AFTER_GUESTS_CAL_VIDEO_NO_SHOW.json", VIDEO_NO_SHOW_BY_HOST],
        VIDEO_UID, [("S12", "Booked"), ("S26", "Noshow")]),
    "seated, no notes": (
        ["BOOKING_CREATED--seated.json"], "6wiopixSVJcQ8cHgd6ahBy", [("S12", "Booked")]),
}


def body_of(item: str | bytes) -> bytes:
    return item if isinstance(item, bytes) else fixture_bytes(item)


def messages(folder: Path) -> list[hl7.Message]:
    return [hl7.parse(p.read_bytes().decode("utf-8")) for p in sorted(folder.glob("*.hl7"))]


def story(msg: hl7.Message) -> tuple[str, str]:
    return str(msg["MSH.F9.R1.C2"]), str(msg["SCH.F25.R1.C1"])


def by_placer(folder: Path) -> dict[str, list[hl7.Message]]:
    out: dict[str, list[hl7.Message]] = {}
    for msg in messages(folder):
        out.setdefault(str(msg["SCH.F1.R1.C1"]), []).append(msg)
    return out


def written(folder: Path, body: bytes) -> Path:
    path = folder / f"derived-{abs(hash(body))}.json"
    path.write_bytes(body)
    return path


def notes(msg: hl7.Message) -> list[str]:
    return [str(seg[3]) for seg in msg if str(seg[0]) == "NTE"]


def start(stack, tmp_path: Path, workers: int = 1) -> tuple[str, Path]:
    folder = tmp_path / "praxis"
    folder.mkdir()
    stack.write_config(config_text(tmp_path / "outbox", extra_targets=praxis_nord(folder),
                                   routes='[[routes]]\ntargets = ["praxis"]\n'))
    base = stack.web()
    for i in range(workers):
        stack.worker(f"w{i + 1}")
    return base, folder


def state(rclient, event_id: str) -> bytes | None:
    return rclient.hget(f"calehr:event:{event_id}", "state")


def test_each_booking_keeps_one_key_through_every_trigger_sequence(stack, tmp_path, rclient):
    base, folder = start(stack, tmp_path)
    ids: dict[str, list[str]] = {}
    for flow, (bodies, _, _) in FLOWS.items():
        for item in bodies:  # in Cal.com's order: each one final before the next is sent
            resp = post_signed(base, body_of(item), **{"X-Cal-Webhook-Version": "undefined"})
            assert resp.status_code == 202, resp.text
            event_id = resp.json()["event_id"]
            wait_for(lambda i=event_id: state(rclient, i) in FINAL, 30,
                     message=f"{flow}: {item!r:.60}")
            ids.setdefault(flow, []).append(event_id)

    got = by_placer(folder)
    assert sorted(got) == sorted(key for _, key, _ in FLOWS.values())  # no key per identifier
    for flow, (_, key, expected) in FLOWS.items():
        assert [story(m) for m in got[key]] == expected, flow
    assert dead_letters(rclient) == []

    # notes: what the booker wrote, never the event type's description
    team = got["b8nxY3NhrSVA36YRNA8SpK"][0]
    assert notes(team) == [r"Bitte MRT-Befund\E\CD mitbringen"]
    assert notes(got["6wiopixSVJcQ8cHgd6ahBy"][0]) == []  # seated: description is the type's
    paid = got["3dmiFVFBJGQBimsVTtnNFu"][0]
    assert notes(paid) == [r"Bitte MRT-Befund\E\CD mitbringen"]  # from the `notes` response
    # a host who did not join is recorded, not sent; the host's later mark is a duplicate
    video = ids["Cal Video no-shows"]
    assert state(rclient, video[1]) == b"ignored"
    assert rclient.hget(f"calehr:event:{video[3]}", "reason").startswith(b"duplicate_of:")

    # `calehr map` prints, for each body of a booking, what the worker sent (MSH aside)
    for flow, (bodies, key, _) in FLOWS.items():
        files = [str(FIXTURES / b) if isinstance(b, str) else str(written(tmp_path, b))
                 for b in bodies]
        run = subprocess.run([sys.executable, "-m", "calehr.cli", "map", *files], env=stack.env,
                             cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        mapped = [line for line in run.stdout.splitlines()
                  if SEGMENT.match(line) and not line.startswith("MSH")]
        sent = [str(seg) for m in got[key] for seg in m if str(seg[0]) != "MSH"]
        assert mapped == sent, flow
    # the logs of web and worker name ids and codes, never the patient or what they wrote
    logs = "".join(p.output() for p in stack.procs)
    assert '"event_id"' in logs
    assert [s for s in REAL_PHI if s in logs] == []
    # a no-show alone maps against the booking the bridge knows (its times and patient)
    alone = written(tmp_path, with_changes(fixture_bytes("BOOKING_NO_SHOW_UPDATED.json"),
                                           bookingUid="6wiopixSVJcQ8cHgd6ahBy"))
    run = subprocess.run([sys.executable, "-m", "calehr.cli", "map", str(alone)], env=stack.env,
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    seated = [str(seg) for seg in got["6wiopixSVJcQ8cHgd6ahBy"][0] if str(seg[0]) != "MSH"]
    s26 = [line for line in run.stdout.splitlines() if SEGMENT.match(line)]
    assert s26[0].split("|")[8] == "SIU^S26^SIU_S12"
    assert [line for line in s26[1:] if not line.startswith(("SCH", "AI"))] == \
        [line for line in seated if not line.startswith(("SCH", "AI"))]  # TQ1, PID, RGS


def test_reversed_and_concurrent_bodies_still_meet_under_one_key(stack, tmp_path, rclient):
    base, folder = start(stack, tmp_path, workers=2)
    stack.beat()
    bodies = [body_of(item) for spec in FLOWS.values() for item in reversed(spec[0])]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda b: post_signed(base, b), bodies))
    assert {a.status_code for a in answers} == {202}
    for event_id in (a.json()["event_id"] for a in answers):
        wait_for(lambda i=event_id: state(rclient, i) in FINAL, 60, message="final")

    got = by_placer(folder)
    assert sorted(got) == sorted(key for _, key, _ in FLOWS.values())
    for flow, (_, key, expected) in FLOWS.items():
        sent = [story(m) for m in got[key]]
        assert sent[-1] == expected[-1], flow  # the EHR ends where Cal.com ended
        assert sent[0][0] == "S12", flow
    assert [e for e, _ in (story(m) for m in got[VIDEO_UID])].count("S26") == 1
    assert dead_letters(rclient) == []


def test_a_ledger_keyed_by_icaluid_keeps_its_key_for_later_bodies(stack, tmp_path, rclient):
    """Ledgers written before keys were uid roots keyed appointments by iCalUID: a booking
    begun then keeps that SCH-1 for its reschedule (no iCalUID) and its cancel."""
    from core.config import Settings
    from core.runtime import Runtime

    base, folder = start(stack, tmp_path)
    rt = Runtime.build(Settings.load(stack.env), kick=lambda *a: None,
                       reprocess=lambda *a: None)
    legacy = "b8nxY3NhrSVA36YRNA8SpK@Cal.diy"
    created = fixture_bytes("BOOKING_CREATED.json")
    event_id, _ = rt.store.put(created, "BOOKING_CREATED")
    rt.ledger.accept(legacy, event_id=event_id, uid="b8nxY3NhrSVA36YRNA8SpK", previous_uid=None,
                     mark="0:BOOKING_CREATED", sequence=0, created_at=0.0, status="created",
                     order=1, deliveries=[], event_hash=rt.store.keys.event(event_id),
                     unprocessed=rt.store.keys.unprocessed, event_state="done")
    for name in ("BOOKING_RESCHEDULED.json", "BOOKING_CANCELLED.json"):
        eid = post_signed(base, fixture_bytes(name)).json()["event_id"]
        wait_for(lambda i=eid: state(rclient, i) in FINAL, 30, message=name)
    got = by_placer(folder)
    assert list(got) == [legacy]
    assert [story(m) for m in got[legacy]] == [("S13", "Booked"), ("S15", "Cancelled")]
    assert json.loads(json.dumps(dead_letters(rclient))) == []
