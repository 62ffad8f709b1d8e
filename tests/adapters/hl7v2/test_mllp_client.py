"""MLLPClient against the real EHR simulator process and against scripted TCP peers."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import hl7
import pytest

from adapters.hl7v2 import FrameSplitter, MLLPClient, build_siu, frame
from core.config import TargetSettings
from tests.adapters.hl7v2.helpers import MESSAGE_TIME, event_from, profile
from tests.factories import sim_messages
from tests.support import Proc, ehr_sim_cmd, free_port, wait_for

CONTROL = "CTRL0000000000000042"


@pytest.fixture
def start_sim(tmp_path: Path) -> Iterator[Callable[..., tuple[Proc, int, Path]]]:
    procs: list[Proc] = []

    def start(ack: str = "AA", delay_ms: int = 0, extra: tuple[str, ...] = (),
              port: int | None = None, out: Path | None = None) -> tuple[Proc, int, Path]:
        port = port or free_port()
        out = out or tmp_path / f"sim-{len(procs)}"
        proc = Proc(f"sim-{len(procs)}", ehr_sim_cmd(port, out, ack, delay_ms, extra),
                    None, tmp_path)
        procs.append(proc)
        wait_for(lambda: "listening" in proc.output() or proc.proc.poll() is not None, 20)
        assert proc.proc.poll() is None, proc.output()
        return proc, port, out

    yield start
    for p in procs:
        p.stop()


def target(port: int, **kw) -> TargetSettings:
    return TargetSettings(name="ehr", kind="mllp", host="127.0.0.1", port=port,
                          connect_timeout=1.0, read_timeout=kw.pop("read_timeout", 3.0), **kw)


def siu(tmp_path: Path, control_id: str = CONTROL) -> bytes:
    return build_siu(event_from("02_booking_created.json"), profile(tmp_path), message_event="S12",
                     control_id=control_id, message_time=MESSAGE_TIME)


def test_delivers_and_keeps_one_connection_for_many_messages(tmp_path, start_sim):
    _, port, out = start_sim()
    client = MLLPClient(target(port))
    results = [client.send(siu(tmp_path, f"CTRL{n:016d}"), f"CTRL{n:016d}") for n in range(3)]
    assert [r.ok for r in results] == [True] * 3 and results[0].ack_code == "AA"
    assert client.connects == 1
    got = sim_messages(out)
    assert [m["control_id"] for m in got] == [f"CTRL{n:016d}" for n in range(3)]
    assert str(hl7.parse(got[0]["raw"]).segment("MSH")[9]) == "SIU^S12^SIU_S12"


@pytest.mark.parametrize(("ack", "transient"), [("AE", False), ("AR", True)])
def test_negative_acks_are_reported(tmp_path, start_sim, ack, transient):
    _, port, out = start_sim(ack=ack)
    result = MLLPClient(target(port)).send(siu(tmp_path), CONTROL)
    assert not result.ok and result.transient is transient
    assert result.ack_code == ack and result.detail == f"ACK {ack} ERR 207"
    assert len(sim_messages(out)) == 1


def test_ack_with_the_wrong_control_id_is_not_success(tmp_path, start_sim):
    _, port, _ = start_sim(extra=("--mismatch",))
    client = MLLPClient(target(port, read_timeout=0.5))
    result = client.send(siu(tmp_path), CONTROL)
    assert not result.ok and result.transient and result.detail.startswith("read_timeout")
    assert "ack_mismatch" in result.detail
    assert result.notes == ("ack_mismatch: discarded AA for MSA-2 'WRONGCTRL00000000000', "
                            f"sent '{CONTROL}'",)
    assert client._sock is None  # the connection is not trusted any more


def test_commit_then_application_error_is_the_application_error(tmp_path, start_sim, caplog):
    _, port, out = start_sim(ack="AE", extra=("--commit-first",))
    client = MLLPClient(target(port))
    result = client.send(siu(tmp_path), CONTROL)
    assert not result.ok and not result.transient and result.ack_code == "AE"
    assert result.notes == ("protocol_error: CA in original mode (MSH-15/16 empty); "
                            "waiting for the application ACK",)
    assert "protocol_error: CA in original mode" in caplog.text
    assert len(sim_messages(out)) == 1


def test_commit_then_accept_is_delivered_once_and_the_next_message_is_not_confused(
        tmp_path, start_sim):
    _, port, out = start_sim(ack="AA", extra=("--commit-first",))
    client = MLLPClient(target(port))
    results = [client.send(siu(tmp_path, f"CTRL{n:016d}"), f"CTRL{n:016d}") for n in range(3)]
    assert [(r.ok, r.ack_code) for r in results] == [(True, "AA")] * 3
    assert client.connects == 1
    assert [m["control_id"] for m in sim_messages(out)] == [f"CTRL{n:016d}" for n in range(3)]


def test_stray_ack_for_an_earlier_message_is_discarded_without_a_resend(tmp_path, start_sim,
                                                                       caplog):
    _, port, out = start_sim(extra=("--stray",))
    client = MLLPClient(target(port))
    first = client.send(siu(tmp_path, "FIRST"), "FIRST")
    second = client.send(siu(tmp_path, "SECOND"), "SECOND")
    assert first.ok and second.ok and client.connects == 1
    assert second.notes == ("ack_mismatch: discarded AA for MSA-2 'FIRST', sent 'SECOND'",)
    assert "ack_mismatch: discarded AA for MSA-2 'FIRST'" in caplog.text
    assert [m["control_id"] for m in sim_messages(out)] == ["FIRST", "SECOND"]  # no re-send


def enhanced(port: int, application_ack_type: str, **kw) -> TargetSettings:
    return target(port, ack_mode="enhanced", accept_ack_type="AL",
                  application_ack_type=application_ack_type, **kw)


def test_enhanced_mode_commit_counts_when_no_application_ack_is_asked_for(tmp_path):
    peer = ScriptedPeer(lambda data: frame(_reply(data, "CA")))
    try:
        result = MLLPClient(enhanced(peer.port, "NE")).send(siu(tmp_path), CONTROL)
        assert result.ok and result.ack_code == "CA" and result.notes == ()
    finally:
        peer.close()


def test_enhanced_mode_waits_for_the_application_ack_within_the_read_timeout(tmp_path):
    peer = ScriptedPeer(lambda data: frame(_reply(data, "CA")), hold_open=True)  # no AA comes
    try:
        result = MLLPClient(enhanced(peer.port, "AL", read_timeout=0.5)).send(siu(tmp_path),
                                                                             CONTROL)
        assert not result.ok and result.transient
        assert result.detail == ("read_timeout: no ACK after commit CA; waiting for the "
                                 "application ACK")
    finally:
        peer.close()


def test_enhanced_mode_sends_msh15_and_msh16(tmp_path):
    from tests.adapters.hl7v2.helpers import profile as make_profile

    p = make_profile(tmp_path, ack_mode='"enhanced"', application_ack_type='"NE"')
    wire = build_siu(event_from("02_booking_created.json"), p, message_event="S12",
                     control_id=CONTROL, message_time=MESSAGE_TIME)
    msh = hl7.parse(wire.decode()).segment("MSH")
    assert (str(msh[15]), str(msh[16])) == ("AL", "NE")
    plain = hl7.parse(siu(tmp_path).decode()).segment("MSH")
    assert (str(plain[15]), str(plain[16])) == ("", "")


def _reply(data: bytes, code: str) -> bytes:
    from adapters.hl7v2 import build_ack

    body = data.strip(b"\x0b\x1c\r").decode()
    return build_ack(body, code).encode()


def test_nobody_listening_is_transient(tmp_path):
    result = MLLPClient(target(free_port())).send(siu(tmp_path), CONTROL)
    assert not result.ok and result.transient
    assert result.detail == "connect_failed: ConnectionRefusedError"


def test_slow_ehr_times_out_and_the_connection_is_dropped(tmp_path, start_sim):
    _, port, _ = start_sim(delay_ms=2000)
    client = MLLPClient(target(port, read_timeout=0.3))
    result = client.send(siu(tmp_path), CONTROL)
    assert not result.ok and result.transient and result.detail.startswith("read_timeout")
    assert client._sock is None


def test_reconnects_after_the_ehr_restarts(tmp_path, start_sim):
    proc, port, out = start_sim()
    client = MLLPClient(target(port))
    assert client.send(siu(tmp_path, "FIRST"), "FIRST").ok
    proc.stop()
    start_sim(port=port, out=out)
    assert client.send(siu(tmp_path, "SECOND"), "SECOND").ok
    assert client.connects == 2
    assert [m["control_id"] for m in sim_messages(out)] == ["FIRST", "SECOND"]


def test_garbage_gets_a_nak_and_the_simulator_stays_up(tmp_path, start_sim):
    _, port, out = start_sim()
    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
        s.sendall(b"random bytes" + frame(b"this is not hl7"))
        reply = s.recv(65536)
    assert b"MSA|AR|" in reply and b"ERR|||100" in reply
    assert MLLPClient(target(port)).send(siu(tmp_path), CONTROL).ok
    assert len(sim_messages(out)) == 1


class ScriptedPeer:
    """A TCP peer that answers each frame with what `reply(frame)` returns, in chunks."""

    def __init__(self, reply: Callable[[bytes], bytes], chunk: int = 1,
                 hold_open: bool = False) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.reply, self.chunk = reply, chunk
        self.released = threading.Event()
        self.hold_open = hold_open  # keep the connection after the reply until close()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\x1c\x0d" not in data:
                    piece = conn.recv(65536)
                    if not piece:
                        break
                    data += piece
                out = self.reply(data)
                for i in range(0, len(out), self.chunk):
                    conn.sendall(out[i:i + self.chunk])
                if self.hold_open:
                    self.released.wait(10)

    def close(self) -> None:
        self.released.set()
        # close() alone leaves this thread in accept() on a file descriptor number that a later
        # test's server may get: that server's requests were answered here. Wake it, then close.
        with contextlib.suppress(OSError):
            self.server.shutdown(socket.SHUT_RDWR)
        self.thread.join(10)
        self.server.close()


def test_ack_arriving_byte_by_byte_after_noise(tmp_path):
    ack = f"MSH|^~\\&|EHR|H|CALEHR|C|20261001||ACK|1|P|2.5.1\rMSA|AA|{CONTROL}\r".encode()
    peer = ScriptedPeer(lambda _: b"\r\n" + frame(ack), chunk=1)
    try:
        assert MLLPClient(target(peer.port)).send(siu(tmp_path), CONTROL).ok
    finally:
        peer.close()


def test_peer_closing_without_ack_is_transient(tmp_path):
    peer = ScriptedPeer(lambda _: b"")
    try:
        result = MLLPClient(target(peer.port)).send(siu(tmp_path), CONTROL)
        assert not result.ok and result.transient and result.detail.startswith("connection_closed")
    finally:
        peer.close()


def test_oversized_ack_frame_is_refused(tmp_path):
    peer = ScriptedPeer(lambda _: frame(b"MSH|" + b"x" * 5000), chunk=4096)
    try:
        result = MLLPClient(target(peer.port, max_frame_bytes=1000)).send(siu(tmp_path), CONTROL)
        assert not result.ok and result.transient and result.detail.startswith("bad_frame")
    finally:
        peer.close()


def test_simulator_answers_every_frame_around_an_oversize_one(tmp_path, start_sim):
    _, port, out = start_sim(extra=("--max-frame-bytes", "4096"))
    first, last = siu(tmp_path, "BEFORE"), siu(tmp_path, "AFTER")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(frame(first) + frame(b"MSH|" + b"x" * 10_000) + frame(last))  # one write
        splitter, acks = FrameSplitter(1 << 20), []
        while len(acks) < 3:
            chunk = s.recv(65536)
            assert chunk, f"simulator closed after {len(acks)} answers"
            acks += [item for kind, item in splitter.feed(chunk) if kind == "frame"]
    codes = [str(hl7.parse(a.decode()).segment("MSA")[1]) for a in acks]
    assert codes == ["AA", "AR", "AA"]
    assert [m["control_id"] for m in sim_messages(out)] == ["BEFORE", "AFTER"]
