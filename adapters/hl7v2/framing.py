"""MLLP framing: <VT> message <FS><CR>."""

from __future__ import annotations

START, END, CR = b"\x0b", b"\x1c", b"\x0d"
_BLANK = b" \t\r\n" + END


class FrameError(ValueError):
    """The byte stream broke the framing rules (too large, or an unterminated frame)."""


def frame(message: bytes) -> bytes:
    return START + message + END + CR


class FrameSplitter:
    """Bytes in, events out: ("frame", body), ("junk", n), ("oversize", n).

    A frame that came in the same read as an oversize one is never lost, and bytes outside a
    frame are reported so the peer can be told.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.buf = bytearray()
        self.skipping = False  # inside an oversize frame: drop bytes up to its END CR

    def feed(self, data: bytes) -> list[tuple[str, bytes | int]]:
        self.buf += data
        out: list[tuple[str, bytes | int]] = []
        while self.buf:
            if self.skipping:
                end = self.buf.find(END + CR)
                if end < 0:
                    del self.buf[:-1]  # keep a possible END whose CR has not come yet
                    return out
                del self.buf[: end + 2]
                self.skipping = False
                continue
            start = self.buf.find(START)
            junk = self.buf if start < 0 else self.buf[:start]
            if junk.strip(_BLANK):
                out.append(("junk", len(junk)))
            if start < 0:
                self.buf.clear()
                return out
            del self.buf[:start]
            end = self.buf.find(END + CR, 1)
            if end < 0:
                if len(self.buf) - 1 > self.max_bytes:
                    out.append(("oversize", len(self.buf) - 1))
                    self.buf.clear()
                    self.skipping = True
                return out
            body = bytes(self.buf[1:end])
            del self.buf[: end + 2]
            restart = body.rfind(START)  # a frame that never ended, then a new one
            if restart >= 0:
                out.append(("junk", restart + 1))
                body = body[restart + 1:]
            out.append(("oversize", len(body)) if len(body) > self.max_bytes else ("frame", body))
        return out

    @property
    def pending(self) -> int:
        return 0 if self.skipping else len(self.buf)
