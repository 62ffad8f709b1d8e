"""Start the npm peers in tests/peers/hl7fhir/ (Medplum's FHIR router, Medplum's HL7 MLLP stack).

scripts/test installs them (`npm ci` from the lock file); a test that needs one fails when they
are missing, with the command that installs them.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from tests.support import ROOT, Proc, wait_for

PEER_DIR = ROOT / "tests" / "peers" / "hl7fhir"


def node() -> str:
    found = shutil.which("node")
    assert found, "Node.js is required for the npm peers (scripts/test installs Debian's nodejs)"
    modules = PEER_DIR / "node_modules" / "@medplum"
    assert modules.is_dir(), f"npm peers missing: run `npm ci` in {PEER_DIR} (scripts/test does)"
    return found


def start(name: str, script: str, args: list[str], log_dir: Path,
          ready: str = r"listening on (\d+)", timeout: float = 60.0) -> tuple[Proc, int]:
    """Run `node <script> <args>` in the peer folder; returns the process and the port it
    printed when ready."""
    proc = Proc(name, [node(), str(PEER_DIR / script), *args], dict(os.environ), log_dir,
                cwd=PEER_DIR)
    found = wait_for(lambda: re.search(ready, proc.output()) or proc.proc.poll() is not None,
                     timeout, 0.05, f"{name} to be ready")
    assert proc.proc.poll() is None, proc.output()
    return proc, int(found.group(1))
