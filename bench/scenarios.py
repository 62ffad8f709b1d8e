"""Scenarios on real processes: ingest, end to end, backlog. Each returns its figures as dicts.

Deliveries are counted at the EHR simulator, which writes every message it receives to its
folder as `<n>_<MSH-10>.hl7` before it ACKs. MSH-10 is derived from the event id that the 202
answer carried, so each file maps back to the POST that caused it. Latency is the file's mtime
(fine-grained on this kernel) minus the wall-clock time just before the POST was written.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from bench.load import booking, have_wrk, percentile, post_all, write_bodies, wrk
from bench.stack import TARGET, BenchStack
from core.deliveries import control_id_for


def wait_until(condition: Callable[[], object], timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return bool(condition())


def arrivals(inbox: Path) -> dict[str, list[float]]:
    """MSH-10 -> mtimes of the files the simulator wrote with it (more than one = duplicate)."""
    found: dict[str, list[float]] = {}
    with os.scandir(inbox) as entries:
        for e in entries:
            if e.name.endswith(".hl7"):
                found.setdefault(e.name[:-4].split("_", 1)[1], []).append(e.stat().st_mtime)
    return found


def placers(inbox: Path) -> dict[str, list[str]]:
    """SCH-1 placer id -> MSH-10 of every message the simulator wrote for it."""
    seen: dict[str, list[str]] = {}
    for path in inbox.glob("*.hl7"):
        for segment in path.read_bytes().split(b"\r"):
            if segment.startswith(b"SCH|"):
                placer = segment.split(b"|")[1].split(b"^")[0].decode()
                seen.setdefault(placer, []).append(path.stem.split("_", 1)[1])
    return seen


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


# -- 1. ingest ---------------------------------------------------------------------------------
def ingest(seconds: float, connections: int, web_workers: int = 2) -> tuple[list[dict], dict]:
    """Signed webhooks/s vs /healthz on the same gunicorn, closed loop at fixed concurrency."""
    with BenchStack("ingest") as st:
        base = st.web(web_workers)
        if have_wrk():
            tool = "wrk"
            warm = write_bodies(st.tmp / "warm.txt", 3000, "W")
            wrk(f"{base}/healthz", 2, connections)
            warmed = wrk(f"{base}/webhooks/calcom", 2, connections, warm)["requests"]
            health = _costed(st, lambda: wrk(f"{base}/healthz", seconds, connections))
            bodies = write_bodies(st.tmp / "bodies.txt", int(seconds * 3000), "I")
            hooks = _costed(st, lambda: wrk(f"{base}/webhooks/calcom", seconds, connections, bodies))
        else:  # fallback: the threaded client, a fixed count instead of a fixed time
            tool = "python-threads"
            warmed = 500
            post_all(base, [b""] * 500, threads=connections, path="/healthz")
            post_all(base, [booking(i, "W") for i in range(warmed)], threads=connections)
            health = _costed(st, lambda: _closed(base, [b""] * 5000, connections, "/healthz"))
            hooks = _costed(st, lambda: _closed(base, [booking(i, "I") for i in range(3000)],
                                                connections))
        stored = sum(1 for _ in st.redis.scan_iter("calehr:event-hash:*", count=1000))
    common = {"tool": tool, "connections": connections, "web_workers": web_workers,
              "web_threads": st.web_threads}
    base_line = {"figure": "ingest_baseline", "route": "GET /healthz",
                 "per_s": round(health["requests"] / health["seconds"]),
                 "p50_ms": health["p50_ms"], "p99_ms": health["p99_ms"],
                 "cpu_us_per_request": health["cpu_us"], **common}
    webhook = {"figure": "ingest", "route": "POST /webhooks/calcom",
               "per_s": round(hooks["requests"] / hooks["seconds"]),
               "p50_ms": hooks["p50_ms"], "p99_ms": hooks["p99_ms"],
               "non_2xx": hooks["non_2xx"] + hooks["socket_errors"], "repeated_bodies": hooks["wrapped"],
               "stored_events": stored - warmed, "cpu_us_per_request": hooks["cpu_us"], **common}
    webhook["ratio_to_baseline"] = round(webhook["per_s"] / base_line["per_s"], 3)
    # what the ratio tends to when both routes are CPU-bound: steadier than the throughput
    # ratio while other jobs share the machine
    webhook["cpu_ratio_to_baseline"] = round(
        sum(v for k, v in health["cpu_us"].items() if k != "other")
        / max(1, sum(v for k, v in hooks["cpu_us"].items() if k != "other")), 3)
    return [base_line, webhook], st.memory.figures()


def _costed(st: BenchStack, run: Callable[[], dict]) -> dict:
    """`run()`'s figures plus CPU µs per request: web, Redis, the load client (wrk is a child
    process, the threaded client is this one) and `other` (the rest of the machine)."""
    before, kids = st.cpu(), os.times()
    done = run()
    after, kids_after = st.cpu(), os.times()
    n = max(1, done["requests"])
    client = (after["client"] - before["client"]
              + kids_after.children_user + kids_after.children_system
              - kids.children_user - kids.children_system)
    used = {"web": after["web"] - before["web"], "redis": after["redis"] - before["redis"],
            "client": client}
    used["other"] = max(0.0, after["machine"] - before["machine"] - sum(used.values()))
    return {**done, "cpu_us": {k: round(1e6 * v / n) for k, v in used.items()}}


def _closed(base: str, bodies: list[bytes], threads: int, path: str = "/webhooks/calcom") -> dict:
    started = time.perf_counter()
    sent = post_all(base, bodies, threads=threads, path=path)
    took = [s.seconds for s in sent]
    return {"requests": len(sent), "seconds": time.perf_counter() - started,
            "p50_ms": ms(percentile(took, 50)), "p99_ms": ms(percentile(took, 99)),
            "non_2xx": sum(s.status not in (200, 202) for s in sent), "socket_errors": 0,
            "wrapped": 0}


def redis_calls(st: BenchStack) -> int:
    """Commands Redis has run since it started (INFO commandstats), less our own INFO calls."""
    stats = st.redis.info("commandstats")
    return sum(v["calls"] for k, v in stats.items() if k != "cmdstat_info")


# -- 2. end to end -----------------------------------------------------------------------------
def run_phase(st: BenchStack, base: str, bodies: list[bytes], rate: float | None,
           timeout: float) -> dict:
    """POST the bodies (at `rate`/s, or closed loop with 8 threads) and wait for the EHR."""
    cpu_before, calls_before = st.cpu(), redis_calls(st)
    sent = post_all(base, bodies, rate=rate, threads=8 if rate is None else 32)
    want = {control_id_for(f"{s.event_id}.{TARGET}"): s for s in sent if s.event_id}
    wait_until(lambda: len(want.keys() & arrivals(st.inbox).keys()) >= len(want), timeout)
    got = arrivals(st.inbox)
    cpu = {k: v - cpu_before.get(k, 0.0) for k, v in st.cpu().items()}
    calls = redis_calls(st) - calls_before
    first_at = {c: min(got[c]) for c in want if c in got}
    latencies = [first_at[c] - want[c].at for c in first_at]
    start = min(s.at for s in sent)
    span = (max(first_at.values()) - start) if first_at else float("nan")
    posting = max(s.at + s.seconds for s in sent) - start
    return {"posted": len(bodies), "accepted": len(want), "delivered": len(first_at),
            "lost": len(want) - len(first_at),
            "duplicates": sum(len(got[c]) - 1 for c in first_at),
            "posted_per_s": round(len(sent) / posting, 1),
            "bookings_per_s": round(len(first_at) / span, 1),
            "p50_ms": ms(percentile(latencies, 50)), "p99_ms": ms(percentile(latencies, 99)),
            "max_ms": ms(max(latencies, default=float("nan"))),
            # everything sent to Redis (web, Celery, worker, beat) over the phase, per booking
            "redis_commands_per_booking": round(calls / max(1, len(first_at)), 1),
            "cpu_ms_per_booking": {k: round(1000 * v / max(1, len(first_at)), 2)
                                   for k, v in cpu.items() if k != "machine"},
            # CPU that processes outside this stack took meanwhile (other jobs on the box)
            "other_cpu_s": round(cpu["machine"] - sum(v for k, v in cpu.items() if k != "machine"), 1),
            "phase_s": round(time.time() - start, 1)}


def end_to_end(workers: int, burst: int, rates: list[float], rate_seconds: float,
               timeout: float) -> tuple[list[dict], dict]:
    """Bookings/s (a burst, closed loop) and latency at fixed offered rates, webhook to ACK."""
    with BenchStack(f"e2e-{workers}") as st:
        st.ehr_sim()
        base = st.web(2)
        st.workers(workers)
        st.beat()
        out = _phases(st, base, "e2e", workers, burst, rates, rate_seconds, timeout)
    return out, st.memory.figures()


def bare_end_to_end(workers: int, burst: int, rates: list[float], rate_seconds: float,
                    timeout: float) -> tuple[list[dict], dict]:
    """The same phases on the bare pipeline (bench/bare.py): what no guarantees would cost."""
    with BenchStack(f"bare-{workers}") as st:
        st.ehr_sim()
        base = st.bare(workers)
        out = _phases(st, base, "bare", workers, burst, rates, rate_seconds, timeout)
    return out, st.memory.figures()


def _phases(st: BenchStack, base: str, name: str, workers: int, burst: int, rates: list[float],
            rate_seconds: float, timeout: float) -> list[dict]:
    """Warm-up, the burst (`<name>_throughput`), then each offered rate (`<name>_latency`)."""
    run_phase(st, base, [booking(i, "w") for i in range(50)], None, timeout)  # warm-up
    res = run_phase(st, base, [booking(i, "T") for i in range(burst)], None, timeout)
    out = [{"figure": f"{name}_throughput", "workers": workers, **res}]
    for tag, rate in zip("LMNOP", rates, strict=False):
        bodies = [booking(i, tag) for i in range(int(rate * rate_seconds))]
        res = run_phase(st, base, bodies, rate, timeout)
        out.append({"figure": f"{name}_latency", "workers": workers, "offered_per_s": rate, **res})
    return out

