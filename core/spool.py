"""Ingest spool: signed webhooks that arrive while Redis is down, kept on local disk.

One append-only file that every web process appends to under an exclusive `flock`; each record
is a length-prefixed Fernet token (body encrypted) and is fsync'd before the sender gets 202. A
drainer moves the active file aside under the same lock, feeds each record to the event store
(exact-duplicate dedupe makes a re-drain after a crash harmless) and deletes the file.
A record torn by a crash mid-append (never answered 202) is skipped up to the next whole record
and its bytes are kept in quarantine/; an append that cannot write the whole record refuses.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import struct
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from core import clock
from core.crypto import Cipher

_HEADER = struct.Struct(">I")
ACTIVE = "active.spool"


class SpoolFull(Exception):
    """The spool reached its size bound."""


class SpoolWriteError(OSError):
    """A record could not be written whole (a full disk): the sender gets 503, not 202."""


QUARANTINE = "quarantine"  # torn bytes go here, one file per drain that found some
_TOKEN_START = b"gAAAAA"  # every Fernet token starts so (version 0x80, then the time)


@dataclass(frozen=True)
class SpooledRequest:
    spool_id: str
    raw: bytes
    trigger: str
    received_at: float


class IngestSpool:
    def __init__(self, folder: Path, cipher: Cipher, max_bytes: int) -> None:
        self.folder = folder
        self.cipher = cipher
        self.max_bytes = max_bytes
        folder.mkdir(parents=True, exist_ok=True)
        self._lock_path = folder / ".lock"

    def _locked(self):
        fd = os.open(self._lock_path, os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd

    def _unlock(self, fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def has_records(self) -> bool:
        return any(self.folder.glob("*.spool"))

    def size(self) -> int:
        return sum(p.stat().st_size for p in self.folder.glob("*.spool"))

    def append(self, raw: bytes, trigger: str) -> str:
        spool_id = "sp_" + uuid.uuid4().hex[:20]
        record = json.dumps({"id": spool_id, "trigger": trigger, "at": clock.now(),
                             "body": base64.b64encode(raw).decode()}).encode()
        token = self.cipher.encrypt(record)
        data = _HEADER.pack(len(token)) + token
        fd = self._locked()
        try:
            if self.size() + len(data) > self.max_bytes:
                (self.folder / ".full").touch()
                raise SpoolFull(f"spool holds {self.size()} bytes (limit {self.max_bytes})")
            out = os.open(self.folder / ACTIVE, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
            try:
                before = os.fstat(out).st_size
                written = os.write(out, data)
                if written != len(data):  # disk full (or a file size limit): undo, refuse
                    os.ftruncate(out, before)
                    raise SpoolWriteError(f"short write to the spool: {written} of {len(data)} bytes")
                os.fsync(out)
            finally:
                os.close(out)
        finally:
            self._unlock(fd)
        return spool_id

    @property
    def full(self) -> bool:
        """An append was refused for lack of room since the last drain."""
        return (self.folder / ".full").exists()

    def pending(self) -> int:
        return sum(1 for path in self.folder.glob("*.spool")
                   for item in self._scan(path.read_bytes()) if isinstance(item, SpooledRequest))

    def _records(self, path: Path) -> Iterator[SpooledRequest]:
        for item in self._scan(path.read_bytes()):
            if isinstance(item, SpooledRequest):
                yield item

    def _scan(self, data: bytes) -> Iterator[SpooledRequest | bytes]:
        """The records of a spool file, and the torn bytes between them (a crash mid-append:
        before its fsync and its 202). A torn record is skipped up to the next whole one."""
        pos = 0
        while pos < len(data):
            item, end = self._record_at(data, pos)
            if item is not None:
                yield item
                pos = end
                continue
            resume = self._next_record(data, pos + 1)
            yield data[pos:resume]
            pos = resume

    def _record_at(self, data: bytes, pos: int) -> tuple[SpooledRequest | None, int]:
        if pos + _HEADER.size > len(data):
            return None, pos
        (length,) = _HEADER.unpack_from(data, pos)
        end = pos + _HEADER.size + length
        if end > len(data) or not data.startswith(_TOKEN_START, pos + _HEADER.size):
            return None, pos
        try:
            rec = json.loads(self.cipher.decrypt(data[pos + _HEADER.size:end]))
            item = SpooledRequest(rec["id"], base64.b64decode(rec["body"]), rec["trigger"],
                                  float(rec["at"]))
        except Exception:  # noqa: BLE001 - torn or foreign bytes: whatever fails, not a record
            return None, pos
        return item, end

    def _next_record(self, data: bytes, start: int) -> int:
        """Where the next whole record starts at or after `start` (the end when none does)."""
        at = data.find(_TOKEN_START, start + _HEADER.size)
        while at != -1:
            if self._record_at(data, at - _HEADER.size)[0] is not None:
                return at - _HEADER.size
            at = data.find(_TOKEN_START, at + 1)
        return len(data)

    def _quarantine(self, torn: bytes) -> Path:
        folder = self.folder / QUARANTINE
        folder.mkdir(mode=0o700, exist_ok=True)
        path = folder / f"torn-{time.time_ns()}.bin"
        fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
        try:
            os.write(fd, torn)
            os.fsync(fd)
        finally:
            os.close(fd)
        return path

    def drain(self, put: Callable[[SpooledRequest], None],
              on_torn: Callable[[int, int, Path], None] | None = None) -> int:
        """Feed every spooled request to `put`; a file is deleted only when all of it went in.
        Torn bytes are copied to quarantine/ first and `on_torn(spans, bytes, path)` is told.

        `put` raising (Redis gone again) stops the drain; the file stays for the next try.
        """
        drain_fd = os.open(self.folder / ".drain-lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(drain_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(drain_fd)
            return 0  # another web process is draining
        try:
            return self._drain(put, on_torn)
        finally:
            fcntl.flock(drain_fd, fcntl.LOCK_UN)
            os.close(drain_fd)

    def _drain(self, put: Callable[[SpooledRequest], None],
               on_torn: Callable[[int, int, Path], None] | None) -> int:
        fd = self._locked()
        try:
            active = self.folder / ACTIVE
            if active.exists() and active.stat().st_size:
                os.replace(active, self.folder / f"draining-{time.time_ns()}.spool")
        finally:
            self._unlock(fd)
        moved = 0
        for path in sorted(self.folder.glob("draining-*.spool")):
            items = list(self._scan(path.read_bytes()))
            spans = [i for i in items if isinstance(i, bytes)]
            if spans and not path.with_suffix(".quarantined").exists():  # once per file
                where = self._quarantine(b"".join(spans))
                path.with_suffix(".quarantined").touch()
                if on_torn is not None:
                    on_torn(len(spans), sum(map(len, spans)), where)
            for item in items:
                if isinstance(item, SpooledRequest):
                    put(item)
                    moved += 1
            path.unlink()
            path.with_suffix(".quarantined").unlink(missing_ok=True)
        (self.folder / ".full").unlink(missing_ok=True)
        return moved
