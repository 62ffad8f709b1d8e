"""MLLP sender: one kept-open connection per target, timeouts on connect and read, optional TLS.

One message in flight: replies naming another MSH-10 are logged and discarded; a commit ACK
(CA) waits for the application ACK unless the target asked for none (enhanced mode, MSH-16).
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from dataclasses import replace

from adapters.hl7v2.ack import judge
from adapters.hl7v2.framing import FrameError, FrameSplitter, frame
from core.config import TargetSettings
from core.models import DeliveryResult

log = logging.getLogger(__name__)
MAX_FRAMES_PER_MESSAGE = 20  # strays, commit ACKs and the answer; more is a misbehaving peer


class _PeerClosed(ConnectionError):
    pass


class MLLPClient:
    def __init__(self, target: TargetSettings) -> None:
        self.target = target
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self.connects = 0

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def _connect(self) -> socket.socket:
        t = self.target
        sock = socket.create_connection((t.host, t.port), timeout=t.connect_timeout)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if t.tls:
            ctx = ssl.create_default_context(cafile=t.tls_ca_file or None)
            if t.tls_cert_file:
                ctx.load_cert_chain(t.tls_cert_file, t.tls_key_file or None)
            sock = ctx.wrap_socket(sock, server_hostname=t.host)
        self.connects += 1
        return sock

    def _read_frame(self, sock: socket.socket, splitter: FrameSplitter, pending: list[bytes],
                    deadline: float) -> bytes:
        while not pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            sock.settimeout(left)
            data = sock.recv(65536)
            if not data:
                raise _PeerClosed
            for kind, item in splitter.feed(data):
                if kind == "frame":
                    assert isinstance(item, bytes)
                    pending.append(item)
                elif kind == "oversize":
                    raise FrameError(f"ACK frame larger than {self.target.max_frame_bytes} bytes")
        return pending.pop(0)

    def _await_answer(self, sock: socket.socket, control_id: str,
                      notes: list[str]) -> DeliveryResult:
        """Read frames until the one that answers `control_id` finally; strays are discarded."""
        splitter, pending = FrameSplitter(self.target.max_frame_bytes), []
        deadline = time.monotonic() + self.target.read_timeout
        for _ in range(MAX_FRAMES_PER_MESSAGE):
            step = judge(self._read_frame(sock, splitter, pending, deadline), control_id,
                         self.target)
            if step.note:
                notes.append(step.note)
                log.warning("mllp ack: %s", step.note,
                            extra={"target": self.target.name, "control_id": control_id})
            if step.final is not None:
                return step.final
        raise FrameError(f"more than {MAX_FRAMES_PER_MESSAGE} replies without an answer")

    def send(self, wire: bytes, control_id: str) -> DeliveryResult:
        """Send one message and read its ACK. Never raises for network trouble."""
        with self._lock:
            notes: list[str] = []
            result = self._send_locked(wire, control_id, notes)
            return replace(result, notes=tuple(notes)) if notes else result

    def _send_locked(self, wire: bytes, control_id: str, notes: list[str]) -> DeliveryResult:
        for _ in range(2):  # a kept-open connection may have been closed by the EHR meanwhile
            reused = self._sock is not None
            try:
                if self._sock is None:
                    self._sock = self._connect()
            except (OSError, ssl.SSLError) as exc:
                self.close()
                return DeliveryResult(ok=False, transient=True,
                                      detail=f"connect_failed: {exc.__class__.__name__}")
            try:
                self._sock.sendall(frame(wire))
                result = self._await_answer(self._sock, control_id, notes)
            except _PeerClosed:
                self.close()
                if reused and not notes:
                    continue
                return DeliveryResult(ok=False, transient=True, detail=_after(
                    "connection_closed: no ACK before close", notes))
            except TimeoutError:
                self.close()  # a late ACK on this socket would answer the wrong message
                return DeliveryResult(ok=False, transient=True,
                                      detail=_after("read_timeout: no ACK", notes))
            except FrameError as exc:
                self.close()
                return DeliveryResult(ok=False, transient=True, detail=f"bad_frame: {exc}")
            except (OSError, ssl.SSLError) as exc:
                self.close()
                if reused and not notes:
                    continue
                return DeliveryResult(ok=False, transient=True,
                                      detail=f"send_failed: {exc.__class__.__name__}")
            if not result.ok and result.detail.startswith("bad_ack"):
                self.close()
            return result
        return DeliveryResult(ok=False, transient=True, detail="connection_closed: twice")


def _after(detail: str, notes: list[str]) -> str:
    return f"{detail} after {'; '.join(notes)}" if notes else detail
