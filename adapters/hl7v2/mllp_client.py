"""MLLP sender: one kept-open connection per target, timeouts on connect and read, optional TLS."""

from __future__ import annotations

import socket
import ssl
import threading
import time

from adapters.hl7v2.ack import classify
from adapters.hl7v2.framing import FrameError, FrameSplitter, frame
from core.config import TargetSettings
from core.models import DeliveryResult


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

    def _read_frame(self, sock: socket.socket) -> bytes:
        splitter = FrameSplitter(self.target.max_frame_bytes)
        deadline = time.monotonic() + self.target.read_timeout
        while True:
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
                    return item
                if kind == "oversize":
                    raise FrameError(f"ACK frame larger than {self.target.max_frame_bytes} bytes")

    def send(self, wire: bytes, control_id: str) -> DeliveryResult:
        """Send one message and read its ACK. Never raises for network trouble."""
        with self._lock:
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
                    reply = self._read_frame(self._sock)
                except _PeerClosed:
                    self.close()
                    if reused:
                        continue
                    return DeliveryResult(ok=False, transient=True,
                                          detail="connection_closed: no ACK before close")
                except TimeoutError:
                    self.close()  # a late ACK on this socket would answer the wrong message
                    return DeliveryResult(ok=False, transient=True, detail="read_timeout: no ACK")
                except FrameError as exc:
                    self.close()
                    return DeliveryResult(ok=False, transient=True, detail=f"bad_frame: {exc}")
                except (OSError, ssl.SSLError) as exc:
                    self.close()
                    if reused:
                        continue
                    return DeliveryResult(ok=False, transient=True,
                                          detail=f"send_failed: {exc.__class__.__name__}")
                result = classify(reply, control_id, self.target)
                if not result.ok and result.detail.startswith(("ack_mismatch", "bad_ack")):
                    self.close()
                return result
            return DeliveryResult(ok=False, transient=True, detail="connection_closed: twice")
