"""Ingest spool: signed webhooks that arrive while Redis is down, kept on local disk.

One append-only file that every web process appends to under an exclusive `flock`; each record
is a length-prefixed Fernet token (body encrypted) and is fsync'd before the sender gets 202. A
drainer moves the active file aside under the same lock, feeds each record to the event store
(exact-duplicate dedupe makes a re-drain after a crash harmless) and deletes the file.
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

from core.crypto import Cipher

_HEADER = struct.Struct(">I")
ACTIVE = "active.spool"


class SpoolFull(Exception):
    """The spool reached its size bound."""


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
        record = json.dumps({"id": spool_id, "trigger": trigger, "at": time.time(),
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
                os.write(out, data)
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
        return sum(1 for path in self.folder.glob("*.spool") for _ in self._records(path))

    def _records(self, path: Path) -> Iterator[SpooledRequest]:
        data = path.read_bytes()
        pos = 0
        while pos + _HEADER.size <= len(data):
            (length,) = _HEADER.unpack_from(data, pos)
            token = data[pos + _HEADER.size: pos + _HEADER.size + length]
            if len(token) < length:
                break  # a torn tail (crash mid-append, before the fsync and the 202)
            pos += _HEADER.size + length
            rec = json.loads(self.cipher.decrypt(token))
            yield SpooledRequest(rec["id"], base64.b64decode(rec["body"]), rec["trigger"],
                                 float(rec["at"]))

    def drain(self, put: Callable[[SpooledRequest], None]) -> int:
        """Feed every spooled request to `put`; a file is deleted only when all of it went in.

        `put` raising (Redis gone again) stops the drain; the file stays for the next try.
        """
        drain_fd = os.open(self.folder / ".drain-lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(drain_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(drain_fd)
            return 0  # another web process is draining
        try:
            return self._drain(put)
        finally:
            fcntl.flock(drain_fd, fcntl.LOCK_UN)
            os.close(drain_fd)

    def _drain(self, put: Callable[[SpooledRequest], None]) -> int:
        fd = self._locked()
        try:
            active = self.folder / ACTIVE
            if active.exists() and active.stat().st_size:
                os.replace(active, self.folder / f"draining-{time.time_ns()}.spool")
        finally:
            self._unlock(fd)
        moved = 0
        for path in sorted(self.folder.glob("draining-*.spool")):
            for item in self._records(path):
                put(item)
                moved += 1
            path.unlink()
        (self.folder / ".full").unlink(missing_ok=True)
        return moved
