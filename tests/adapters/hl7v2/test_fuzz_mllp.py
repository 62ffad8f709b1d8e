"""Issue 17 fuzz suite (MLLP side): hypothesis-made byte streams against a real `calehr mllp`.

Streams: random bytes, mutated SIU messages (bytes flipped, inserted, cut; fields replaced by
hostile text; times out of range), and valid frames joined and split at random points.
Asserted for each: the listener answers only framed ACKs (AA/AE/AR, CA/CE/CR), never the
"internal error" NAK that a handler crash produces, closes the connection after our EOF
within a deadline (no hang), and afterwards still accepts a valid SIU with AA.
Bounded to about 150 examples; CALEHR_FUZZ_EXAMPLES=2000 for a longer run.
"""

from __future__ import annotations

import os
import socket
import time

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from adapters.hl7v2.framing import CR, END, START, FrameSplitter
from tests.adapters.hl7v2.inbound_samples import siu
from tests.adapters.hl7v2.listener import exchange, msa, start_listener
from tests.support import config_text

SCALE = int(os.environ.get("CALEHR_FUZZ_EXAMPLES", "0"))
HOSTILE = [b"\x0bMSH|^~\\&|X", b"\x1c\r", b"00010101000000+0100", b"99991231230000-1200",
           b"NaN", b"1e400", b"-5", b"\xff\xfe\x00", b"^~\\&" * 50, b"|" * 300, b"\r" * 20,
           b"MSH|^~\\&|", b"S12", b"OKAFOR01", b""]


@st.composite
def mutated_siu(draw) -> bytes:
    event = draw(st.sampled_from(["S12", "S13", "S14", "S15", "S17", "S23", "S26", "A01"]))
    msg = bytearray(siu(event, f"FZ{draw(st.integers(0, 10**6))}",
                        appt_id=f"FZ-{draw(st.integers(0, 50))}",
                        enhanced=draw(st.booleans()), tq1=draw(st.booleans())))
    for _ in range(draw(st.integers(1, 5))):
        op = draw(st.sampled_from(["flip", "insert", "cut", "field", "dup"]))
        pos = draw(st.integers(0, max(0, len(msg) - 1)))
        if op == "flip" and msg:
            msg[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            msg[pos:pos] = draw(st.one_of(st.binary(max_size=20), st.sampled_from(HOSTILE)))
        elif op == "cut":
            del msg[pos:pos + draw(st.integers(1, 40))]
        elif op == "field":  # replace the text between two field separators
            start = msg.find(b"|", pos)
            end = msg.find(b"|", start + 1) if start >= 0 else -1
            if end > start >= 0:
                msg[start + 1:end] = draw(st.sampled_from(HOSTILE))
        else:
            seg_end = msg.find(b"\r", pos)
            seg_start = msg.rfind(b"\r", 0, pos) + 1
            if seg_end > seg_start:
                msg[seg_end:seg_end] = b"\r" + msg[seg_start:seg_end]
    return bytes(msg)


@st.composite
def stream(draw) -> list[bytes]:
    """The bytes of one connection, as the chunks they are sent in."""
    kind = draw(st.sampled_from(["random", "frames", "frames", "frames"]))
    if kind == "random":
        data = draw(st.binary(max_size=400))
    else:
        parts = draw(st.lists(st.one_of(mutated_siu().map(lambda m: START + m + END + CR),
                                        st.binary(max_size=30)), min_size=1, max_size=4))
        data = b"".join(parts)
        if draw(st.booleans()):  # an unfinished frame at the end
            data += START + draw(mutated_siu())[: draw(st.integers(0, 60))]
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=6)))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True) if b > a]


def _talk(port: int, chunks: list[bytes]) -> list[bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for chunk in chunks:
            sock.sendall(chunk)
        sock.shutdown(socket.SHUT_WR)
        received = b""
        deadline = time.monotonic() + 20
        while True:
            assert time.monotonic() < deadline, "the listener did not close after our EOF"
            try:
                got = sock.recv(65536)
            except ConnectionResetError:
                break
            if not got:
                break
            received += got
    events = FrameSplitter(1 << 20).feed(received)
    assert all(kind == "frame" for kind, _ in events), received[:300]
    return [body for _, body in events]


def test_mllp_byte_streams_never_crash_or_hang_the_listener(stack, outbox):
    stack.write_config(config_text(outbox) + "\n[mllp]\nframe_deadline_seconds = 5\n")
    proc, port = start_listener(stack)
    codes: dict[str, int] = {}

    @settings(max_examples=SCALE or 150, deadline=None, database=None,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(chunks=stream())
    def one(chunks: list[bytes]) -> None:
        answers = _talk(port, chunks)
        if END + CR in b"".join(chunks):
            assert answers, "a complete frame got no answer"
        for ack in answers:
            fields = msa(ack)
            codes[fields[1]] = codes.get(fields[1], 0) + 1
            assert fields[1] in ("AA", "AE", "AR", "CA", "CE", "CR"), ack
            assert b"internal error" not in ack, (ack, b"".join(chunks)[:400])
        assert proc.proc.poll() is None, proc.output()[-2000:]

    one()
    print(f"MLLP fuzz: ACK codes {codes}")
    assert msa(exchange(port, siu("S12", "AFTER-FUZZ", appt_id="AFTER"))[0])[1] == "AA"
