"""Issue 7: `calehr mllp` as a real process, driven by real MLLP clients over real sockets."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapters.hl7v2.framing import CR, END, START
from core.blocks import BusyBlockStore, block_uid
from core.inbound_store import InboundStore
from tests.adapters.hl7v2.inbound_samples import PATIENT_STRINGS, siu
from tests.adapters.hl7v2.listener import (
    busy_events,
    err,
    exchange,
    feed,
    msa,
    read_frame,
    rss_kb,
    start_listener,
)
from tests.support import FUTURE_YEAR as YEAR
from tests.support import (
    KEY,
    PHI_STRINGS,
    ROOT,
    config_text,
    fixture_bytes,
    post_signed,
    wait_for,
)

pytestmark = pytest.mark.slow
NODE_CLIENT = "node-hl7-client@3.2.0"


@pytest.fixture(scope="session")
def node_modules(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """npm's node-hl7-client: from var/npm (scripts/test installs it there) or installed now."""
    prepared = ROOT / "var" / "npm" / "node_modules"
    if (prepared / "node-hl7-client").is_dir():
        return prepared
    prefix = tmp_path_factory.mktemp("npm")
    subprocess.run(["npm", "install", "--no-save", "--no-audit", "--no-fund", "--prefix",
                    str(prefix), NODE_CLIENT], check=True, capture_output=True, timeout=300)
    return prefix / "node_modules"


def mllp_send(port: int, message: bytes, tmp_path: Path) -> str:
    """python-hl7's `mllp_send` console script: reads framed messages from a file, prints the
    ACK it read (one recv)."""
    path = tmp_path / f"msg-{time.monotonic_ns()}.hl7"
    path.write_bytes(START + message + END + CR)
    exe = Path(sys.executable).with_name("mllp_send")
    run = subprocess.run([str(exe), "-p", str(port), "-f", str(path), "127.0.0.1"],
                         capture_output=True, timeout=30)
    assert run.returncode == 0, run.stderr.decode()
    return run.stdout.decode().strip(START.decode() + END.decode() + "\r\n")


def node_send(port: int, message: bytes, tmp_path: Path, node_modules: Path) -> str:
    path = tmp_path / f"node-{time.monotonic_ns()}.hl7"
    path.write_bytes(message)
    script = Path(__file__).with_name("node_mllp_send.cjs")
    run = subprocess.run([shutil.which("node") or "node", str(script), str(port), str(path)],
                         capture_output=True, timeout=60,
                         env={**os.environ, "NODE_PATH": str(node_modules)})
    assert run.returncode == 0, run.stderr.decode()
    return json.loads(run.stdout.decode().splitlines()[-1])["ack"]


def msa_of(ack_text: str) -> list[str]:
    return next(s for s in ack_text.replace("\n", "\r").split("\r") if s.startswith("MSA|")).split("|")


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_real_clients_block_and_release_through_the_ics_feed(stack, outbox, tmp_path,
                                                             node_modules):
    stack.write_config(config_text(outbox))
    base = stack.web()
    _, port = start_listener(stack)

    ack = mllp_send(port, siu("S12", "PY-1", appt_id="APPT-PY", start=f"{YEAR}0114090000",
                              end=f"{YEAR}0114093000"), tmp_path)
    assert msa_of(ack)[1:3] == ["AA", "PY-1"]
    ack = node_send(port, siu("S12", "NODE-1", appt_id="APPT-NODE", start=f"{YEAR}0114100000+0100",
                              end=f"{YEAR}0114104500+0100"), tmp_path, node_modules)
    assert msa_of(ack)[1:3] == ["AA", "NODE-1"]

    py_uid, node_uid = block_uid("HOSPITAL", "APPT-PY"), block_uid("HOSPITAL", "APPT-NODE")
    events = wait_for(lambda: (e := busy_events(base)) and len(e) == 2 and e, 30,
                      message="both blocks in the ICS feed")
    # site-local time without an offset is read in the target's zone (America/Chicago, CST)
    assert events[py_uid]["start"] == datetime(YEAR, 1, 14, 15, 0, tzinfo=UTC)
    assert events[py_uid]["end"] == datetime(YEAR, 1, 14, 15, 30, tzinfo=UTC)
    assert events[node_uid]["start"] == datetime(YEAR, 1, 14, 9, 0, tzinfo=UTC)
    assert events[node_uid]["end"] == datetime(YEAR, 1, 14, 9, 45, tzinfo=UTC)
    assert {e["summary"] for e in events.values()} == {"Busy"}
    assert {e["transp"] for e in events.values()} == {"OPAQUE"}
    body = feed(base).text
    assert f"DTSTART:{YEAR}0114T150000Z" in body
    assert [s for s in (*PATIENT_STRINGS, "APPT-PY", "APPT-NODE") if s in body] == []

    assert msa_of(mllp_send(port, siu("S15", "PY-2", appt_id="APPT-PY", status="Cancelled"),
                            tmp_path))[1] == "AA"
    assert msa_of(node_send(port, siu("S15", "NODE-2", appt_id="APPT-NODE", status="Cancelled"),
                            tmp_path, node_modules))[1] == "AA"
    wait_for(lambda: feed(base).status_code == 200 and busy_events(base) == {}, 30,
             message="both blocks released")


def test_move_noshow_and_blocked_slots_through_the_feed(stack, outbox):
    stack.write_config(config_text(outbox))
    base = stack.web()
    _, port = start_listener(stack)
    uid = block_uid("HOSPITAL", "EHR-APPT-1")
    acks = exchange(port, siu("S12", "M-1"),
                    siu("S13", "M-2", start=f"{YEAR}0115130000", end=f"{YEAR}0115140000"),
                    siu("S26", "M-3", status="Noshow"),
                    siu("S23", "M-4", appt_id="", patient=False, status="Blocked",
                        start=f"{YEAR}0116080000+0000", end=f"{YEAR}0116120000+0000"))
    assert [msa(a)[1] for a in acks] == ["AA"] * 4
    events = busy_events(base)
    assert len(events) == 2
    assert events[uid]["start"] == datetime(YEAR, 1, 15, 19, 0, tzinfo=UTC)
    assert events[uid]["end"] == datetime(YEAR, 1, 15, 20, 0, tzinfo=UTC)
    assert events[uid]["sequence"] == 1
    (slot_uid,) = set(events) - {uid}
    assert events[slot_uid]["start"] == datetime(YEAR, 1, 16, 8, 0, tzinfo=UTC)
    (ack,) = exchange(port, siu("S24", "M-5", appt_id="", patient=False, status="Blocked",
                                start=f"{YEAR}0116080000+0000", end=f"{YEAR}0116120000+0000"))
    assert msa(ack)[1] == "AA"
    assert list(busy_events(base)) == [uid]


def test_repeat_gets_the_stored_ack_and_changes_nothing(stack, outbox, rclient):
    stack.write_config(config_text(outbox))
    _, port = start_listener(stack)
    first, again = exchange(port, siu("S12", "DUP-1"), siu("S12", "DUP-1"))
    (later,) = exchange(port, siu("S12", "DUP-1"))
    assert msa(first)[1:3] == ["AA", "DUP-1"]
    assert first == again == later
    blocks = BusyBlockStore(rclient).list("OKAFOR01")
    assert [b.uid for b in blocks] == [block_uid("HOSPITAL", "EHR-APPT-1")]
    from core.crypto import Cipher

    store = InboundStore(rclient, Cipher([KEY]))
    assert store.count() == 1
    (message_id,) = [m.decode() for m in rclient.zrange(store.log_key, 0, -1)]
    assert store.body(message_id) == siu("S12", "DUP-1")  # kept, encrypted at rest
    raw = rclient.hget(f"calehr:inbound:{message_id}", "body")
    assert [s for s in PATIENT_STRINGS if s.encode() in raw] == []


def test_enhanced_mode_answers_with_commit_codes(stack, outbox):
    stack.write_config(config_text(outbox))
    _, port = start_listener(stack)
    ok, bad = exchange(port, siu("S12", "ENH-1", enhanced=True),
                       siu("S12", "ENH-2", provider="NOBODY", enhanced=True))
    assert msa(ok)[1] == "CA"
    assert msa(bad)[1] == "CE" and "204" in err(bad)


def test_bad_input_gets_a_nak_or_a_logged_close_and_the_listener_serves_on(stack, outbox):
    stack.write_config(config_text(outbox))
    proc, port = start_listener(stack, "--max-frame-bytes", "4096")

    # bytes outside any frame: a NAK, and the same connection still works
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        nak = read_frame(sock)
        assert msa(nak)[1] == "AR" and "outside an MLLP frame" in err(nak)
        sock.sendall(START + siu("S12", "AFTER-JUNK") + END + CR)
        assert msa(read_frame(sock))[1:3] == ["AA", "AFTER-JUNK"]

    # an oversize frame: a NAK, then the next frame on the same connection is answered
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(START + b"MSH|" + b"X" * 10_000 + END + CR)
        nak = read_frame(sock)
        assert msa(nak)[1] == "AR" and "larger than 4096 bytes" in err(nak)
        sock.sendall(START + siu("S12", "AFTER-BIG") + END + CR)
        assert msa(read_frame(sock))[1:3] == ["AA", "AFTER-BIG"]

    # half a frame, then the sender closes its side: a NAK, a clean close and a log line
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(START + siu("S12", "HALF")[:60])
        sock.shutdown(socket.SHUT_WR)
        nak = read_frame(sock)
        assert msa(nak)[1] == "AR" and "inside an MLLP frame" in err(nak)
        assert sock.recv(10) == b""
    wait_for(lambda: "unfinished frame" in proc.output(), 10, message="the close is logged")

    # garbage inside a frame, a non-SIU message, an unknown event, an unknown provider,
    # a message without SCH: each a NAK whose ERR says why
    answers = exchange(
        port, b"\x00\xffnot hl7 at all",
        siu("S12", "ADT-1").replace(b"SIU^S12^SIU_S12", b"ADT^A01^ADT_A01"),
        siu("S12", "S99-1").replace(b"SIU^S12^", b"SIU^S99^"),
        siu("S12", "WHO-1", provider="NOBODY"),
        b"\r".join(s for s in siu("S12", "NOSCH").split(b"\r") if not s.startswith(b"SCH")),
    )
    codes = [(msa(a)[1], err(a).split("|")[3].split("^")[0]) for a in answers]
    assert codes == [("AR", "100"), ("AR", "200"), ("AR", "201"), ("AE", "204"), ("AE", "100")]
    assert "not an HL7 message" in err(answers[0])
    assert "configured provider" in err(answers[3])

    # and the listener still serves a new client
    assert msa(exchange(port, siu("S12", "STILL-UP"))[0])[1] == "AA"
    assert proc.proc.poll() is None
    log = proc.output()
    assert [s for s in (*PATIENT_STRINGS, *PHI_STRINGS) if s in log] == []


def test_a_thousand_messages_over_twenty_connections(stack, outbox, rclient, capsys):
    stack.write_config(config_text(outbox))
    proc, port = start_listener(stack)

    def run(batch: str, count: int, connections: int = 20) -> list[bytes]:
        acks: list[list[bytes]] = [[] for _ in range(connections)]

        def client(n: int) -> None:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                for i in range(n, count, connections):
                    minute = i % 600
                    msg = siu("S12", f"{batch}-{i:05d}", appt_id=f"{batch}-APPT-{i}",
                              start=f"{YEAR}020{1 + i // 600}{9 + minute // 60:02d}{minute % 60:02d}00",
                              end=f"{YEAR}020{1 + i // 600}{9 + minute // 60:02d}{minute % 60:02d}30")
                    sock.sendall(START + msg + END + CR)
                    acks[n].append(read_frame(sock, 60))

        threads = [threading.Thread(target=client, args=(n,)) for n in range(connections)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        return [a for per in acks for a in per]

    assert len(run("WARM", 100)) == 100  # thread pool, Redis pool and caches filled
    before = rss_kb(proc.pid)
    started = time.monotonic()
    acks = run("LOAD", 1000)
    elapsed = time.monotonic() - started
    after = rss_kb(proc.pid)

    assert len(acks) == 1000
    assert {msa(a)[1] for a in acks} == {"AA"}
    assert len({msa(a)[2] for a in acks}) == 1000
    from core.crypto import Cipher

    assert InboundStore(rclient, Cipher([KEY])).count() == 1100
    assert len(BusyBlockStore(rclient).list("OKAFOR01")) == 1100
    with capsys.disabled():
        print(f"\n1,000 messages / 20 connections: {elapsed:.2f}s, "
              f"listener RSS {before} kB before, {after} kB after ({after - before:+d} kB)")
    assert after - before < 16 * 1024, f"RSS grew from {before} kB to {after} kB"


def test_ehr_booking_over_a_calcom_booking_is_a_conflict(stack, outbox, rclient):
    stack.write_config(config_text(outbox))
    base = stack.web()
    stack.worker()
    _, port = start_listener(stack)
    assert post_signed(base, future_fixture("02_booking_created.json")).status_code == 202
    wait_for(lambda: list(outbox.glob("*.hl7")), 30, message="the Cal.com booking delivered")

    # Cal.com holds <YEAR>-10-14 15:00-15:30Z for dr-okafor; the EHR books 14:45-15:15Z
    (ack,) = exchange(port, siu("S12", "CONFLICT-1", appt_id="EHR-OVER",
                                start=f"{YEAR}1014144500+0000", end=f"{YEAR}1014151500+0000"))
    assert msa(ack)[1] == "AA"
    run = wait_for(lambda: (r := subprocess.run(
        [sys.executable, "-m", "calehr.cli", "deadletter", "list", "--stage", "conflict"],
        env=stack.env, cwd=ROOT, capture_output=True, text=True, timeout=60))
        and "overlap" in r.stdout and r, 30, message="the conflict in `deadletter list`")
    assert "7xQm2kVd9RbTn4FgHs1LpA" in run.stdout
    keys = rclient.keys("calehr:dl:dl_*")
    texts = [rclient.hget(k, "error_text").decode() for k in keys]
    assert len(texts) == 1 and "OKAFOR01" in texts[0]
    assert [s for s in (*PATIENT_STRINGS, *PHI_STRINGS, "EHR-OVER") if s in texts[0]] == []
    # the same booking again (another control id) records no second conflict
    (ack,) = exchange(port, siu("S14", "CONFLICT-2", appt_id="EHR-OVER",
                                start=f"{YEAR}1014144500+0000", end=f"{YEAR}1014151500+0000"))
    assert msa(ack)[1] == "AA"
    assert len(rclient.keys("calehr:dl:dl_*")) == 1


def future_fixture(name: str) -> bytes:
    """A fixture with its appointment moved years ahead: blocks that ended long ago are purged."""
    body = fixture_bytes(name)
    for day in (b"2026-10-14T15", b"2026-10-16T19", b"2026-10-16T20"):
        body = body.replace(day, str(YEAR).encode() + day[4:])
    return body


def conflict_texts(rclient) -> list[str]:
    return [rclient.hget(k, "error_text").decode() for k in rclient.keys("calehr:dl:dl_*")
            if rclient.hget(k, "stage") == b"conflict"]


def test_calcom_booking_over_an_ehr_block_is_a_conflict_and_still_delivered(stack, outbox,
                                                                           rclient):
    stack.write_config(config_text(outbox))
    base = stack.web()
    stack.worker()
    _, port = start_listener(stack)
    # the EHR books first: 15:15-15:45Z, then a patient books 15:00-15:30Z in Cal.com
    (ack,) = exchange(port, siu("S12", "FIRST-1", appt_id="EHR-FIRST",
                                start=f"{YEAR}1014151500+0000", end=f"{YEAR}1014154500+0000"))
    assert msa(ack)[1] == "AA"
    assert post_signed(base, future_fixture("02_booking_created.json")).status_code == 202
    wait_for(lambda: list(outbox.glob("*.hl7")), 30, message="the Cal.com booking delivered")
    (text,) = wait_for(lambda: conflict_texts(rclient), 30, message="the conflict recorded")
    assert "Cal.com booking came after the EHR block" in text and "OKAFOR01" in text
    assert "7xQm2kVd9RbTn4FgHs1LpA" in text
    assert [s for s in (*PATIENT_STRINGS, *PHI_STRINGS, "EHR-FIRST") if s in text] == []
    # the EHR side sees the pair as known: an update of the same block records nothing new
    (ack,) = exchange(port, siu("S14", "FIRST-2", appt_id="EHR-FIRST",
                                start=f"{YEAR}1014151000+0000", end=f"{YEAR}1014154500+0000"))
    assert msa(ack)[1] == "AA"
    assert len(conflict_texts(rclient)) == 1


def test_cancelled_calcom_booking_no_longer_conflicts(stack, outbox, rclient):
    stack.write_config(config_text(outbox))
    base = stack.web()
    stack.worker()
    _, port = start_listener(stack)
    index = "calehr:calbookings:OKAFOR01"
    for name in ("02_booking_created.json", "04_booking_rescheduled.json"):
        assert post_signed(base, future_fixture(name)).status_code == 202
    wait_for(lambda: len(list(outbox.glob("*.hl7"))) == 2, 30, message="S12 and S13 delivered")
    held = json.loads(rclient.hget(index, "7xQm2kVd9RbTn4FgHs1LpA"))
    assert held["start"] == f"{YEAR}-10-16T19:30:00+00:00"  # the index moved with the reschedule
    assert post_signed(base, future_fixture("05_booking_cancelled.json")).status_code == 202
    wait_for(lambda: len(list(outbox.glob("*.hl7"))) == 3, 30, message="S15 delivered")
    assert rclient.hlen(index) == 0 and rclient.zcard(index + ":ends") == 0
    (ack,) = exchange(port, siu("S12", "AFTER-CANCEL", appt_id="EHR-FREE",
                                start=f"{YEAR}1016193000+0000", end=f"{YEAR}1016200000+0000"))
    assert msa(ack)[1] == "AA"
    assert len(BusyBlockStore(rclient).list("OKAFOR01")) == 1
    assert conflict_texts(rclient) == []


def test_listener_refuses_to_start_without_redis(tmp_path, outbox):
    config = tmp_path / "calehr.toml"
    config.write_text(config_text(outbox))
    env = {"CALEHR_CONFIG": str(config), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-m", "calehr.cli", "mllp", "--port", "0"], env=env,
                         cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert run.returncode == 2 and "REDIS_URL" in run.stderr
