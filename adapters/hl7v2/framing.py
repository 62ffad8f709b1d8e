"""MLLP framing: <VT> message <FS><CR>."""

from __future__ import annotations

START, END, CR = b"\x0b", b"\x1c", b"\x0d"


class FrameError(ValueError):
    """The byte stream broke the framing rules (too large, or an unterminated frame)."""


def frame(message: bytes) -> bytes:
    return START + message + END + CR


class FrameReader:
    """Collects bytes and yields whole frames. Bytes outside a frame are dropped (and counted)."""

    def __init__(self, max_bytes: int = 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._buf = bytearray()
        self.discarded = 0

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        frames = []
        while True:
            start = self._buf.find(START)
            if start < 0:
                self.discarded += len(self._buf)
                self._buf.clear()
                return frames
            if start:
                self.discarded += start
                del self._buf[:start]
            end = self._buf.find(END + CR, 1)
            if end < 0:
                if len(self._buf) > self.max_bytes + 1:
                    self._buf.clear()
                    raise FrameError(f"frame larger than {self.max_bytes} bytes")
                return frames
            body = bytes(self._buf[1:end])
            del self._buf[: end + 2]
            if len(body) > self.max_bytes:
                raise FrameError(f"frame larger than {self.max_bytes} bytes")
            frames.append(body)

    @property
    def pending(self) -> int:
        return len(self._buf)
