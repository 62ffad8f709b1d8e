"""`calehr ehr-sim`: an MLLP EHR for tests and demos. Writes each message to a folder, then ACKs."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import re
import sys
from pathlib import Path

from adapters.hl7v2.ack import build_ack, split_segments
from adapters.hl7v2.charset import decode_message
from adapters.hl7v2.framing import FrameSplitter, frame
from adapters.hl7v2.mllp_server import nak, run_until_signal

_SAFE = re.compile(r"[^A-Za-z0-9._-]")


class EhrSimulator:
    def __init__(self, out: Path, ack: str = "AA", delay_ms: int = 0, mismatch: bool = False,
                 max_frame_bytes: int = 1024 * 1024, commit_first: bool = False,
                 stray: bool = False) -> None:
        self.out = out
        self.ack = ack
        self.delay = delay_ms / 1000
        self.mismatch = mismatch
        self.max_frame_bytes = max_frame_bytes
        self.commit_first = commit_first  # CA, then the application ACK
        self.stray = stray  # first an AA naming the message before (or an unknown id)
        self._previous_id = "NEVER-SENT"
        out.mkdir(parents=True, exist_ok=True)
        last = max((int(p.name.split("_", 1)[0]) for p in out.glob("[0-9]*_*.hl7")), default=0)
        self._counter = itertools.count(last + 1)

    def _store(self, raw: bytes, control_id: str) -> None:
        name = f"{next(self._counter):06d}_{_SAFE.sub('_', control_id) or 'no-id'}.hl7"
        tmp = self.out / f".{name}.tmp"
        tmp.write_bytes(raw)
        os.replace(tmp, self.out / name)

    def answer(self, raw: bytes) -> bytes:
        text = decode_message(raw)
        segments = split_segments(text)
        if not segments or not segments[0].startswith("MSH|") or len(segments[0].split("|")) < 12:
            return build_ack(text, "AR", text="not an HL7 message", error_code="100").encode()
        control_id = segments[0].split("|")[9]
        self._store(raw, control_id)
        if self.ack == "AA":
            reply = build_ack(text, "AA")
        else:
            reply = build_ack(text, self.ack, text="rejected by ehr-sim", error_code="207")
        if self.mismatch:
            reply = reply.replace(f"MSA|{self.ack}|{control_id}", f"MSA|{self.ack}|WRONG{control_id}"[:30])
        return reply.encode()

    def answers(self, raw: bytes) -> list[bytes]:
        """The frames to write back for one message, in order."""
        reply = self.answer(raw)
        text = decode_message(raw)
        segments = split_segments(text)
        fields = segments[0].split("|") if segments and segments[0].startswith("MSH|") else []
        if len(fields) < 12:  # garbage: the NAK only
            return [reply]
        out = []
        if self.stray:
            stray_to = text.replace(f"|{fields[9]}|", f"|{self._previous_id}|", 1)
            out.append(build_ack(stray_to, "AA").encode())
        if self.commit_first:
            out.append(build_ack(text, "CA").encode())
        self._previous_id = fields[9]
        return [*out, reply]

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        splitter = FrameSplitter(self.max_frame_bytes)
        try:
            while data := await reader.read(65536):
                for kind, item in splitter.feed(data):
                    if kind == "frame":
                        assert isinstance(item, bytes)
                        if self.delay:
                            await asyncio.sleep(self.delay)
                        reply = b"".join(frame(r) for r in self.answers(item))
                    elif kind == "oversize":
                        reply = nak("frame too large")
                    else:
                        continue  # bytes between frames (e.g. a stray CR LF)
                    writer.write(reply)
                    await writer.drain()
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass  # peer gone, or the simulator is stopping
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()


async def serve(host: str, port: int, sim: EhrSimulator) -> None:
    server = await asyncio.start_server(sim.handle, host, port)
    await run_until_signal(server, "ehr-sim", detail=f" (ack {sim.ack}, out {sim.out})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="calehr ehr-sim", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=6661)
    p.add_argument("--out", type=Path, default=Path("var/ehr-sim"))
    p.add_argument("--ack", choices=["AA", "AE", "AR", "CA", "CE", "CR"], default="AA")
    p.add_argument("--delay-ms", type=int, default=0)
    p.add_argument("--mismatch", action="store_true", help="answer with a wrong MSA-2")
    p.add_argument("--max-frame-bytes", type=int, default=1024 * 1024)
    p.add_argument("--commit-first", action="store_true",
                   help="answer CA first, then the application ACK (--ack)")
    p.add_argument("--stray", action="store_true",
                   help="before each answer, an AA naming the previous message's MSH-10")
    args = p.parse_args(argv)
    sim = EhrSimulator(args.out, args.ack, args.delay_ms, args.mismatch, args.max_frame_bytes,
                       args.commit_first, args.stray)
    try:
        asyncio.run(serve(args.host, args.port, sim))
    except OSError as exc:
        print(f"ehr-sim: cannot listen on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
