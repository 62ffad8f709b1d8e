"""File transport: one message per file, written atomically, names sorting in send order."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from core import clock
from core.config import TargetSettings
from core.models import DeliveryResult

_SAFE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


class FileDropTransport:
    def __init__(self, target: TargetSettings) -> None:
        self.target = target
        self.folder = Path(target.path)

    def existing(self, control_id: str) -> Path | None:
        return next(iter(self.folder.glob(f"*_{control_id}.hl7")), None)

    def send(self, wire: bytes, control_id: str) -> DeliveryResult:
        if not _SAFE_NAME.fullmatch(control_id):  # it names the file: no path or glob parts
            return DeliveryResult(ok=False, transient=False,
                                  detail="file_name_refused: control id is not [A-Za-z0-9_-]")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            done = self.existing(control_id)
            if done is not None:  # an earlier attempt got as far as the rename
                return DeliveryResult(ok=True, detail="file already written", remote_id=done.name)
            stamp = clock.now_utc().strftime("%Y%m%d%H%M%S%f")
            final = self.folder / f"{stamp}_{control_id}.hl7"
            tmp = self.folder / f".{control_id}.{os.getpid()}.{time.monotonic_ns()}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, self.target.file_mode)
            with open(fd, "wb") as fh:
                os.fchmod(fh.fileno(), self.target.file_mode)  # whatever the umask says
                fh.write(wire)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)  # readers never see a half-written .hl7 file
            dir_fd = os.open(self.folder, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            return DeliveryResult(ok=False, transient=True,
                                  detail=f"file_write_failed: {exc.__class__.__name__}")
        return DeliveryResult(ok=True, detail="file written", remote_id=final.name)
