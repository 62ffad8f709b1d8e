"""`calehr mllp`: the inbound MLLP listener (asyncio, many connections, one answer per frame).

Every frame gets an answer: the handler's ACK, or a NAK (AR with ERR) for bytes outside a
frame, an oversize frame, an unfinished frame at close, or a handler failure. A connection is
closed only on idle timeout, peer close, or too many connections, each with a log line.
Frames on one connection are handled in order; the handler runs in a thread pool.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from adapters.hl7v2.ack import build_ack
from adapters.hl7v2.framing import FrameSplitter, frame
from core.config import Settings

log = logging.getLogger(__name__)
Handler = Callable[[bytes], bytes]  # raw message -> ACK bytes (blocking; run in a thread)
Background = Callable[[asyncio.Event], object]  # runs beside the listener until the stop event


@dataclass(frozen=True)
class Limits:
    max_frame_bytes: int = 1024 * 1024
    idle_timeout: float = 300.0
    max_connections: int = 256
    handler_threads: int = 8


def nak(reason: str) -> bytes:
    return frame(build_ack("", "AR", text=reason, error_code="100").encode())


class MLLPListener:
    def __init__(self, handler: Handler, limits: Limits | None = None) -> None:
        self.handler = handler
        self.limits = limits or Limits()
        self.pool = ThreadPoolExecutor(self.limits.handler_threads, "mllp-handler")
        self.open = 0

    async def start(self, host: str, port: int) -> asyncio.Server:
        return await asyncio.start_server(self.connection, host, port)

    async def connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        who = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "peer"
        self.open += 1
        try:
            if self.open > self.limits.max_connections:
                log.warning("connection from %s refused: %d open", who, self.open - 1)
                await self._send(writer, nak("too many connections, try again later"))
                return
            await self._serve(reader, writer, who)
        except (ConnectionError, OSError) as exc:
            log.info("connection from %s ended: %s", who, exc.__class__.__name__)
        finally:
            self.open -= 1
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     who: str) -> None:
        splitter = FrameSplitter(self.limits.max_frame_bytes)
        loop = asyncio.get_running_loop()
        while True:
            try:
                data = await asyncio.wait_for(reader.read(65536), self.limits.idle_timeout)
            except TimeoutError:
                log.info("connection from %s idle for %.0fs: closed", who, self.limits.idle_timeout)
                return
            if not data:
                if splitter.pending:
                    log.warning("connection from %s closed with an unfinished frame (%d bytes)",
                                who, splitter.pending)
                    with contextlib.suppress(ConnectionError, OSError):
                        await self._send(writer, nak("connection closed inside an MLLP frame"))
                return
            for kind, item in splitter.feed(data):
                if kind == "frame":
                    assert isinstance(item, bytes)
                    answer = await loop.run_in_executor(self.pool, self._answer, item)
                elif kind == "junk":
                    log.warning("%d bytes outside an MLLP frame from %s", item, who)
                    answer = nak("data outside an MLLP frame (expected <VT> message <FS><CR>)")
                else:
                    log.warning("frame of %d bytes from %s is over the %d byte limit", item, who,
                                self.limits.max_frame_bytes)
                    answer = nak(f"frame larger than {self.limits.max_frame_bytes} bytes")
                await self._send(writer, answer)

    def _answer(self, raw: bytes) -> bytes:
        try:
            return frame(self.handler(raw))
        except Exception as exc:  # noqa: BLE001 - any bug answers with a NAK, never kills us
            log.error("inbound handler failed: %s", exc.__class__.__name__)
            return frame(build_ack("", "AR", text="internal error, send again later",
                                   error_code="207").encode())

    async def _send(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(data)
        await asyncio.wait_for(writer.drain(), self.limits.idle_timeout)


async def run_until_signal(server: asyncio.Server, banner: str,
                           background: Callable[[asyncio.Event], object] | None = None,
                           detail: str = "") -> None:
    """Print where `server` listens, serve until SIGINT/SIGTERM, then wait for `background`."""
    addr = server.sockets[0].getsockname()
    print(f"{banner} listening on {addr[0]}:{addr[1]}{detail}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    task = asyncio.ensure_future(background(stop)) if background else None
    async with server:
        await stop.wait()
    if task is not None:
        await task


async def serve(listener: MLLPListener, host: str, port: int,
                background: Callable[[asyncio.Event], object] | None = None) -> None:
    await run_until_signal(await listener.start(host, port), "mllp", background)
    listener.pool.shutdown(wait=True)


def main(argv: list[str] | None = None, *,
         make_app: Callable[[Settings], tuple[Handler, Background]]) -> int:
    """`make_app(settings)` -> (handler, background): the composition root passes the worker's."""
    p = argparse.ArgumentParser(prog="calehr mllp", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=6661, help="0 = any free port (printed)")
    p.add_argument("--max-frame-bytes", type=int, default=Limits.max_frame_bytes)
    p.add_argument("--idle-timeout", type=float, default=Limits.idle_timeout)
    p.add_argument("--max-connections", type=int, default=Limits.max_connections)
    p.add_argument("--threads", type=int, default=Limits.handler_threads)
    args = p.parse_args(argv)

    from core.config import ConfigError
    from core.logging import setup_logging

    setup_logging()
    try:
        settings = Settings.load()
        handler, background = make_app(settings)
    except (ConfigError, RuntimeError) as exc:
        print(f"calehr mllp: {exc}", file=sys.stderr)
        return 2
    from core.heartbeat import start_heartbeat

    start_heartbeat(settings, "mllp")
    listener = MLLPListener(handler, Limits(args.max_frame_bytes, args.idle_timeout,
                                                       args.max_connections, args.threads))
    try:
        asyncio.run(serve(listener, args.host, args.port, background))
    except OSError as exc:
        print(f"calehr mllp: cannot listen on {args.host}:{args.port}: {exc.strerror}",
              file=sys.stderr)
        return 2
    return 0
