"""`calehr up` with no config and no REDIS_URL: embedded Redis, web, worker, beat, file-drop EHR."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import requests

from tests.support import fixture_bytes, free_port, post_signed, wait_for, wait_http


def test_up_serves_readyz_and_delivers_a_signed_fixture_to_the_outbox(tmp_path: Path):
    port, mllp_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CALEHR_", "REDIS_"))}
    log = tmp_path / "up.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "calehr.cli", "up", "--port", str(port),
                                 "--mllp-port", str(mllp_port)],
                                cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/readyz", 90)
        assert requests.get(f"{base}/readyz", timeout=5).json()["redis"] == "ok"
        text = wait_for(lambda: "and this secret:" in log.read_text() and log.read_text(), 30)
        secret = re.search(r"and this secret: (\S+)", text).group(1)
        assert secret != "whsec_demo_3f9a1c2e7b"  # a fresh secret was generated
        assert f"{base}/webhooks/calcom" in text
        assert (tmp_path / "var" / "calehr.toml").exists()
        resp = post_signed(base, fixture_bytes("02_booking_created.json"), secret=secret)
        assert resp.status_code == 202, resp.text
        files = wait_for(lambda: list((tmp_path / "var" / "outbox").glob("*.hl7")), 60,
                         message="an SIU file in var/outbox")
        assert b"SIU^S12^SIU_S12" in files[0].read_bytes()
        # the inbound MLLP listener runs too, and answers garbage with a NAK
        import socket

        def nak() -> bytes:
            try:
                with socket.create_connection(("127.0.0.1", mllp_port), timeout=3) as s:
                    s.sendall(b"\x0bnot hl7\x1c\x0d")
                    return s.recv(65536)
            except OSError:
                return b""

        assert b"MSA|AR" in wait_for(nak, 30, 0.2, "the MLLP listener to answer")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    assert proc.returncode == 0, log.read_text()[-3000:]
