"""`calehr mllp`: the inbound MLLP listener (asyncio, many connections, one answer per frame).

Every frame gets an answer: the handler's ACK, or a NAK (AR with ERR) for bytes outside a
frame, an oversize frame, an unfinished frame at close, or a handler failure. A peer on the
hospital network is hostile until proven otherwise:
- addresses outside `[mllp] allowed_peers` are closed at once, without an answer;
- at most `max_connections` in all and `max_connections_per_peer` from one address;
- deadlines are absolute, never restarted by a trickle of bytes: a frame must end within
  `frame_deadline_seconds` of its first byte, and a connection with no complete frame for
  `idle_timeout_seconds` is closed;
- optional TLS (`tls_cert_file`/`tls_key_file`), optionally requiring client certificates.
Frames on one connection are handled in order; the handler runs in a thread pool.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import signal
import ssl
import sys
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from adapters.hl7v2.ack import build_ack
from adapters.hl7v2.framing import FrameSplitter, frame
from core.config import Settings

log = logging.getLogger(__name__)
Handler = Callable[[bytes], bytes]  # raw message -> ACK bytes (blocking; run in a thread)
Background = Callable[[asyncio.Event], object]  # runs beside the listener until the stop event
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Limits:
    max_frame_bytes: int = 1024 * 1024
    idle_timeout: float = 300.0
    max_connections: int = 256
    handler_threads: int = 8
    max_per_peer: int = 32
    frame_deadline: float = 30.0
    allowed_peers: tuple[str, ...] = ()  # IP addresses or networks; empty = any

    @classmethod
    def from_settings(cls, m: Any, handler_threads: int = 8) -> Limits:
        """From core.config.MllpListenerSettings."""
        return cls(m.max_frame_bytes, m.idle_timeout_seconds, m.max_connections,
                   handler_threads, m.max_connections_per_peer, m.frame_deadline_seconds,
                   tuple(m.allowed_peers))


def nak(reason: str) -> bytes:
    return frame(build_ack("", "AR", text=reason, error_code="100").encode())


def server_tls(cert_file: str, key_file: str, client_ca_file: str = "") -> ssl.SSLContext:
    """TLS for the listener; with a client CA every peer must present a certificate from it."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    if client_ca_file:
        ctx.load_verify_locations(client_ca_file)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class MLLPListener:
    def __init__(self, handler: Handler, limits: Limits | None = None,
                 tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.limits = limits or Limits()
        self.tls = tls
        self.pool = ThreadPoolExecutor(self.limits.handler_threads, "mllp-handler")
        self.open = 0
        self.per_peer: Counter[str] = Counter()
        self.allowed: tuple[Network, ...] = tuple(
            ipaddress.ip_network(p, strict=False) for p in self.limits.allowed_peers)

    async def start(self, host: str, port: int) -> asyncio.Server:
        return await asyncio.start_server(
            self.connection, host, port, ssl=self.tls,
            ssl_handshake_timeout=self.limits.frame_deadline if self.tls else None)

    def _allowed(self, address: str) -> bool:
        if not self.allowed:
            return True
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.allowed)

    async def connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) else "?"
        who = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "peer"
        if not self._allowed(address):
            log.warning("connection from %s refused: not in mllp.allowed_peers", who)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()
            return
        self.open += 1
        self.per_peer[address] += 1
        try:
            if self.open > self.limits.max_connections:
                log.warning("connection from %s refused: %d open", who, self.open - 1)
                await self._send(writer, nak("too many connections, try again later"))
                return
            if self.per_peer[address] > self.limits.max_per_peer:
                log.warning("connection from %s refused: %d open from that address", who,
                            self.per_peer[address] - 1)
                await self._send(writer, nak("too many connections from this address"))
                return
            await self._serve(reader, writer, who)
        except (ConnectionError, OSError, TimeoutError) as exc:
            log.info("connection from %s ended: %s", who, exc.__class__.__name__)
        finally:
            self.open -= 1
            self.per_peer[address] -= 1
            if self.per_peer[address] <= 0:
                del self.per_peer[address]
            writer.close()
            with contextlib.suppress(ConnectionError, OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     who: str) -> None:
        limits = self.limits
        splitter = FrameSplitter(limits.max_frame_bytes)
        loop = asyncio.get_running_loop()
        idle_until = time.monotonic() + limits.idle_timeout  # moved only by a complete frame
        frame_until: float | None = None  # set by a frame's first byte, cleared by its end
        while True:
            until = idle_until if frame_until is None else min(idle_until, frame_until)
            try:
                data = await asyncio.wait_for(reader.read(65536),
                                              max(0.0, until - time.monotonic()))
            except TimeoutError:
                if frame_until is not None and time.monotonic() >= frame_until:
                    log.warning("connection from %s: frame not finished within %.0fs: closed",
                                who, limits.frame_deadline)
                    with contextlib.suppress(ConnectionError, OSError, TimeoutError):
                        await self._send(writer, nak(
                            f"frame not finished within {limits.frame_deadline:g} s"))
                else:
                    log.info("connection from %s idle for %.0fs: closed", who,
                             limits.idle_timeout)
                return
            if not data:
                if splitter.pending:
                    log.warning("connection from %s closed with an unfinished frame (%d bytes)",
                                who, splitter.pending)
                    with contextlib.suppress(ConnectionError, OSError, TimeoutError):
                        await self._send(writer, nak("connection closed inside an MLLP frame"))
                return
            for kind, item in splitter.feed(data):
                if kind == "frame":
                    assert isinstance(item, bytes)
                    answer = await loop.run_in_executor(self.pool, self._answer, item)
                    idle_until = time.monotonic() + limits.idle_timeout
                elif kind == "junk":
                    log.warning("%d bytes outside an MLLP frame from %s", item, who)
                    answer = nak("data outside an MLLP frame (expected <VT> message <FS><CR>)")
                else:
                    log.warning("frame of %d bytes from %s is over the %d byte limit", item, who,
                                limits.max_frame_bytes)
                    answer = nak(f"frame larger than {limits.max_frame_bytes} bytes")
                await self._send(writer, answer)
                frame_until = None
            if splitter.pending or splitter.skipping:
                if frame_until is None:
                    frame_until = time.monotonic() + limits.frame_deadline
            else:
                frame_until = None

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
    p.add_argument("--max-frame-bytes", type=int, help="overrides [mllp] max_frame_bytes")
    p.add_argument("--idle-timeout", type=float, help="overrides [mllp] idle_timeout_seconds")
    p.add_argument("--max-connections", type=int, help="overrides [mllp] max_connections")
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
    m = settings.mllp
    limits = Limits.from_settings(m, args.threads)
    overrides = {"max_frame_bytes": args.max_frame_bytes, "idle_timeout": args.idle_timeout,
                 "max_connections": args.max_connections}
    limits = Limits(**{**limits.__dict__, **{k: v for k, v in overrides.items() if v}})
    try:
        tls = server_tls(m.tls_cert_file, m.tls_key_file, m.tls_client_ca_file) \
            if m.tls_cert_file else None
    except (OSError, ssl.SSLError) as exc:
        print(f"calehr mllp: mllp.tls_cert_file/tls_key_file: {exc}", file=sys.stderr)
        return 2
    listener = MLLPListener(handler, limits, tls)
    try:
        asyncio.run(serve(listener, args.host, args.port, background))
    except OSError as exc:
        print(f"calehr mllp: cannot listen on {args.host}:{args.port}: {exc.strerror}",
              file=sys.stderr)
        return 2
    return 0
