"""Start `calehr mllp` as a real process and talk to it over real sockets."""

from __future__ import annotations

import re
import socket
import sys
import time
from pathlib import Path

import requests
from icalendar import Calendar

from adapters.hl7v2.framing import CR, END, START
from tests.support import Proc, wait_for

ICS_TOKEN = "tok-okafor"


def start_listener(stack, *extra: str, name: str = "mllp") -> tuple[Proc, int]:
    proc = stack.start(name, [sys.executable, "-m", "calehr.cli", "mllp", "--port", "0", *extra])
    line = wait_for(lambda: re.search(r"mllp listening on [\d.]+:(\d+)", proc.output())
                    or proc.proc.poll() is not None, 30, 0.05, f"{name} to listen")
    assert proc.proc.poll() is None, proc.output()
    return proc, int(line.group(1))


def read_frame(sock: socket.socket, timeout: float = 15.0) -> bytes:
    """One framed answer (without the framing); b"" if the peer closed first."""
    sock.settimeout(timeout)
    buf = b""
    deadline = time.monotonic() + timeout
    while END + CR not in buf:
        if time.monotonic() > deadline:
            raise TimeoutError("no complete MLLP frame")
        chunk = sock.recv(65536)
        if not chunk:
            return b""
        buf += chunk
    assert buf.startswith(START), buf[:20]
    return buf[1:buf.index(END + CR)]


def exchange(port: int, *messages: bytes) -> list[bytes]:
    """Send each message framed on one connection and read one answer after each."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        answers = []
        for msg in messages:
            sock.sendall(START + msg + END + CR)
            answers.append(read_frame(sock))
        return answers


def msa(ack: bytes) -> list[str]:
    line = next(s for s in ack.decode().split("\r") if s.startswith("MSA|"))
    return line.split("|")


def err(ack: bytes) -> str:
    return next((s for s in ack.decode().split("\r") if s.startswith("ERR|")), "")


def feed(base: str, provider: str = "dr-okafor", token: str = ICS_TOKEN) -> requests.Response:
    return requests.get(f"{base}/calendars/{provider}.ics", params={"token": token}, timeout=10)


def busy_events(base: str, provider: str = "dr-okafor") -> dict[str, dict]:
    """The feed's VEVENTs by UID (parsed with icalendar); {} unless it answers 200."""
    resp = feed(base, provider)
    if resp.status_code != 200:
        return {}
    cal = Calendar.from_ical(resp.content)
    return {str(ev["UID"]): {"start": ev.decoded("DTSTART"), "end": ev.decoded("DTEND"),
                             "summary": str(ev["SUMMARY"]), "transp": str(ev["TRANSP"]),
                             "sequence": int(ev.get("SEQUENCE", 0))}
            for ev in cal.walk("VEVENT")}


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")
