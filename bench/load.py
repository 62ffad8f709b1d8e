"""Load: unique signed Cal.com bodies, wrk for closed-loop HTTP, a threaded client for fixed rates."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from tests.factories import CREATED_UID
from tests.support import fixture_bytes, sign

LUA = Path(__file__).with_name("signed.lua")
_CREATED = fixture_bytes("02_booking_created.json").strip()


def booking(i: int, tag: str) -> bytes:
    """BOOKING_CREATED for a booking of its own (uid and iCalUID differ for every i and tag)."""
    if len(tag) != 1:
        raise ValueError("tag is one character: uids are cut to 22")
    return _CREATED.replace(CREATED_UID, f"{tag}{i:021d}".encode())


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


# -- wrk (closed loop at fixed concurrency) --------------------------------------------------
def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def write_bodies(path: Path, n: int, tag: str) -> Path:
    """One `<signature> <body>` line per unique booking, for signed.lua."""
    with open(path, "wb") as fh:
        for i in range(n):
            body = booking(i, tag)
            fh.write(sign(body).encode() + b" " + body + b"\n")
    return path


def wrk(url: str, seconds: float, connections: int, bodies: Path | None = None) -> dict:
    """Run wrk (one thread) against `url`; with `bodies`, POST each signed body once."""
    env = dict(os.environ, BENCH_BODIES=str(bodies) if bodies else "")
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s",
           "-s", str(LUA), url]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds + 60,
                          check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- threaded client (fixed offered rate, or closed loop when rate is None) ------------------
@dataclass
class Sent:
    at: float  # wall clock just before the request was written
    seconds: float  # until the whole response was read
    status: int
    event_id: str


def post_all(base: str, bodies: list[bytes], *, rate: float | None = None, threads: int = 8,
             timeout: float = 600.0, path: str = "/webhooks/calcom") -> list[Sent]:
    """POST each body once (signed); at `rate` per second (open loop) or as fast as `threads`
    allow. An empty body is a GET of `path` instead (the baseline route)."""
    host = urlsplit(base)
    local = threading.local()
    start = time.monotonic() + 0.05
    deadline = start + timeout

    def one(i: int) -> Sent:
        if rate:
            time.sleep(max(0.0, start + i / rate - time.monotonic()))
        if time.monotonic() > deadline:
            return Sent(time.time(), 0.0, 0, "")
        if not hasattr(local, "conn"):
            local.conn = http.client.HTTPConnection(host.hostname, host.port, timeout=10)
        body = bodies[i]
        headers = {"Content-Type": "application/json", "X-Cal-Signature-256": sign(body)}
        at, t0 = time.time(), time.perf_counter()
        try:
            local.conn.request("POST" if body else "GET", path, body or None, headers)
            resp = local.conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException):
            local.conn.close()
            return Sent(at, time.perf_counter() - t0, 0, "")
        if resp.will_close:
            local.conn.close()
        event_id = (json.loads(data).get("event_id") or "") if resp.status == 202 else ""
        return Sent(at, time.perf_counter() - t0, resp.status, event_id)

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, range(len(bodies))))
