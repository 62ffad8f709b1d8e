"""Backlog: bookings accepted while the EHR is down, then the EHR comes up and we time the drain.

Two ways to build the backlog:
- `http` (default): signed webhooks through gunicorn; the worker accepts each one and finds
  the EHR down (the real outage path from the first byte).
- `direct`: the bench process stores each body in the event store and runs the real
  `pipeline.process_event` on it itself (the same accept, queue and failed delivery the worker
  would make, with no HTTP and no Celery hop), so 100,000 fit in minutes on 2 cores. Then the
  worker and beat start, still with the EHR down, and meet a backlog they did not build.

Every tenth booking is also rescheduled (S12 then S13 for one appointment), so the run checks
order per appointment as well as loss and duplicates. The worker's log gives the longest task
run per task name (Celery's "succeeded in Ns") and the soft/hard time limits hit.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from bench.load import post_all
from bench.scenarios import wait_until
from bench.stack import BenchStack
from tests.factories import appointment_bodies, placer_of

TAG = "B"
RESCHEDULE_EVERY = 10
UNPROCESSED = "calehr:events:unprocessed"
_RUNTIME = re.compile(r"Task (calehr\.\w+)\[[^\]]+\] succeeded in ([0-9.]+)s")


def bodies(n: int) -> list[bytes]:
    """Every booking created, then every tenth rescheduled (same appointment, later order)."""
    made = [appointment_bodies(i, TAG) for i in range(n)]
    return [m["created"] for m in made] + [made[i]["rescheduled"]
                                           for i in range(0, n, RESCHEDULE_EVERY)]


def expected_events(n: int) -> dict[str, list[str]]:
    return {placer_of(i, TAG): ["S12", "S13"] if i % RESCHEDULE_EVERY == 0 else ["S12"]
            for i in range(n)}


def received(inbox: Path) -> tuple[dict[str, list[tuple[int, str, str]]], list[float]]:
    """SCH-1 -> [(arrival number, MSH-10, SIU event)] in arrival order; and every file's mtime."""
    seen: dict[str, list[tuple[int, str, str]]] = {}
    mtimes = []
    for path in inbox.glob("*.hl7"):
        number, _, control_id = path.stem.partition("_")
        mtimes.append(path.stat().st_mtime)
        placer = event = ""
        for segment in path.read_bytes().split(b"\r"):
            if segment.startswith(b"MSH|"):
                event = segment.split(b"|")[8].split(b"^")[1].decode()
            elif segment.startswith(b"SCH|"):
                placer = segment.split(b"|")[1].split(b"^")[0].decode()
        seen.setdefault(placer, []).append((int(number), control_id, event))
    for got in seen.values():
        got.sort()
    return seen, sorted(mtimes)


def task_runtimes(log: str) -> dict[str, float]:
    longest: dict[str, float] = {}
    for name, seconds in _RUNTIME.findall(log):
        longest[name] = max(longest.get(name, 0.0), float(seconds))
    return {k: round(v, 3) for k, v in sorted(longest.items())}


def _fill_part(env: dict[str, str], n: int, part: int, parts: int) -> int:
    import redis

    from core.config import Settings
    from core.runtime import Runtime
    from worker import pipeline

    settings = Settings.load(env)
    rt = Runtime.build(settings, lambda *_: None, lambda *_: None,
                       client=redis.Redis.from_url(env["REDIS_URL"]))
    mine = [i for i in range(n) if i % parts == part]
    made = {i: appointment_bodies(i, TAG) for i in mine}
    todo = [(made[i]["created"], "BOOKING_CREATED") for i in mine] + [
        (made[i]["rescheduled"], "BOOKING_RESCHEDULED") for i in mine if i % RESCHEDULE_EVERY == 0]
    accepted = 0
    for raw, trigger in todo:
        event_id, _ = rt.store.put(raw, trigger)
        accepted += pipeline.process_event(rt, event_id) == "accepted"
    return accepted


def fill_direct(st: BenchStack, n: int, parts: int = 2) -> int:
    """Store each body and run the real pipeline on it in this machine's processes (EHR down);
    appointments split by number, so each one's events stay in order in one process."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(parts, mp_context=multiprocessing.get_context("fork")) as pool:
        return sum(pool.map(_fill_part, [st.env] * parts, [n] * parts, range(parts),
                            [parts] * parts))


def run(n: int, workers: int, timeout: float, fill: str = "http") -> tuple[list[dict], dict]:
    want = expected_events(n)
    with BenchStack("backlog") as st:
        started = time.time()
        if fill == "direct":
            st.redis.config_set("appendfsync", "everysec")  # the fill only: the drain fsyncs
            accepted = fill_direct(st, n)
            st.redis.config_set("appendfsync", st.appendfsync)
            st.workers(workers)
            st.beat()
        else:
            base = st.web(2)
            st.workers(workers)
            st.beat()  # nothing listens on the EHR port yet
            all_bodies = bodies(n)
            sent = post_all(base, all_bodies[:n], threads=8)
            # reschedules once their bookings are known (else they wait for a predecessor)
            wait_until(lambda: st.redis.scard("calehr:pending-index") >= n, timeout, 0.5)
            sent += post_all(base, all_bodies[n:], threads=8)
            accepted = sum(1 for s in sent if s.event_id)
        queued = wait_until(lambda: st.redis.scard("calehr:pending-index") >= n
                            and st.redis.zcard(UNPROCESSED) == 0, timeout, 0.5)
        time.sleep(5)  # an outage a little longer than the circuit's wait: the queues meet it
        queued_at = time.time()
        st.ehr_sim()
        up = time.time()
        total = sum(len(v) for v in want.values())
        done = wait_until(lambda: len(list(st.inbox.glob("*.hl7"))) >= total, timeout, 1.0)
        waited_until = time.time()
        wait_until(lambda: st.queue_length() == 0, 30, 0.5)  # late copies would land now
        time.sleep(2)
        seen, mtimes = received(st.inbox)
        log = st.procs["worker"].output()
    first, last = (mtimes[0], mtimes[-1]) if mtimes else (up, up)
    gaps = [b - a for a, b in zip(mtimes, mtimes[1:], strict=False)]
    if not done:  # stalled: the silence until we stopped waiting is a gap too
        gaps.append(waited_until - last)
    out_of_order = sum(1 for placer, got in seen.items()
                       if [e for _, _, e in got] != want.get(placer, [e for _, _, e in got])
                       and len({c for _, c, _ in got}) == len(want.get(placer, [])))
    res = {"figure": "backlog", "events": n, "messages_expected": total, "fill": fill,
           "accepted": accepted, "workers": workers, "drained": done,
           "all_queued": queued, "seconds_to_queue": round(queued_at - started, 1),
           "delivered": sum(1 for p in want if p in seen),
           "lost": sum(max(0, len(want[p]) - len({c for _, c, _ in seen.get(p, [])}))
                       for p in want),
           # a message more than the appointment should get; a copy re-sent under one MSH-10
           "duplicates": sum(max(0, len({c for _, c, _ in got}) - len(want.get(p, [])))
                             for p, got in seen.items()),
           "resent_same_msh10": sum(len(got) - len({c for _, c, _ in got}) for got in seen.values()),
           "out_of_order": out_of_order, "unexpected": len(seen.keys() - want.keys()),
           "seconds_to_drain": round(last - up, 2), "seconds_to_first": round(first - up, 2),
           "drain_per_s": round(len(mtimes) / (last - up), 1) if last > up else 0.0,
           "longest_gap_s": round(max(gaps, default=0.0), 2),
           "max_task_seconds": task_runtimes(log),
           "soft_time_limits_hit": log.count("Soft time limit ("),
           "hard_time_limits_hit": log.count("Hard time limit ("),
           "ticks_skipped_running": log.count("'skipped': 'running'")}
    return [res], st.memory.figures()
