"""An outage backlog bigger than one sweep's bound (real Redis, the real pipeline, real Celery
workers, an MLLP EHR simulator): the queues wait on the circuit at no cost, one tick's work stays
bounded, closing the circuit drains everything in order with no sweep at all, and a sweep killed
halfway holds its lock only briefly."""

from __future__ import annotations

import time
from collections import defaultdict

import pytest
import redis

from core.runtime import Runtime
from tests.factories import appointment_bodies, placer_of, sim_messages
from tests.support import Proc, free_port, mllp_config, wait_for, worker_cmd
from worker import pipeline
from worker.delivery import WAKE_IN_FLIGHT
from worker.factory import make_celery
from worker.sweep import sweep

pytestmark = pytest.mark.slow

BATCH = 30
APPOINTMENTS = 300  # 10 sweeps' worth of queues
DELIVERY = f"""sweep_batch = {BATCH}
circuit_open_seconds = 3600.0
circuit_max_open_seconds = 3600.0
"""


def build_backlog(rt: Runtime, n: int) -> dict[str, list[str]]:
    """n appointments accepted while the EHR is down (every tenth also rescheduled): the real
    pipeline, its inline drain meeting the open circuit. Returns the SIU events each should get."""
    for _ in range(rt.settings.delivery.circuit_failure_threshold):
        rt.breaker.failure("ehr")
    want: dict[str, list[str]] = {}
    later = []
    for i in range(n):
        bodies = appointment_bodies(i, "K")
        event_id, _ = rt.store.put(bodies["created"], "BOOKING_CREATED")
        assert pipeline.process_event(rt, event_id) == "accepted"
        want[placer_of(i, "K")] = ["S12"]
        if i % 10 == 0:
            later.append(bodies["rescheduled"])
            want[placer_of(i, "K")].append("S13")
    for body in later:
        event_id, _ = rt.store.put(body, "BOOKING_RESCHEDULED")
        assert pipeline.process_event(rt, event_id) == "accepted"
    return want


def commands(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(v["calls"] for k, v in stats.items() if k != "cmdstat_info")


def test_backlog_waits_on_the_circuit_each_tick_is_bounded_and_closing_drains_all_in_order(
        stack, outbox, tmp_path, rclient):
    port = free_port()
    out = tmp_path / "ehr"
    stack.write_config(mllp_config(outbox, port, delivery=DELIVERY))
    settings = stack.settings()
    kicks: list[tuple[str, str]] = []
    rt = Runtime.build(settings, lambda key, target, _: kicks.append((key, target)),
                       lambda *_: None, client=rclient)
    want = build_backlog(rt, APPOINTMENTS)
    waiters = rt.ledger.waiters
    # the outage costs nothing per queue: each waits on the circuit, none in the due-set
    assert waiters.counts("ehr") == (APPOINTMENTS, 0)
    assert not [m for m in rclient.zrange(rt.ledger.due, 0, -1) if m.startswith(b"drain:")]
    assert rclient.scard(rt.ledger.pending_index) == APPOINTMENTS

    # (a) one tick handles at most BATCH queues, whatever the backlog; the next continues
    scanned, per_tick = 0, []
    for _ in range(3):
        before = commands(rclient)
        stats = sweep(rt)
        per_tick.append(commands(rclient) - before)
        assert 0 < stats["scanned"] <= 2 * BATCH  # SSCAN's COUNT is a hint
        assert stats["due"] <= BATCH
        scanned += stats["scanned"]
    assert kicks == []  # nothing kicked while the circuit is open: no churn
    assert scanned >= 2 * BATCH  # the cursor moved on between ticks
    assert max(per_tick) < 8 * BATCH < APPOINTMENTS  # a full scan would be 5 commands a queue

    # (b) the EHR is back and a probe goes through: the circuit closes and its waiters drain,
    # in order, with no beat running (nothing but the drains wakes them)
    stack.ehr_sim(port, out)
    swept_at = rclient.hget("calehr:sweep:last", "at")
    rclient.hset(waiters.circuit("ehr"), "open_until", repr(time.time() - 1))  # wait is over
    (probe,) = waiters.claim("ehr", 1, time.time(), probe=True)  # what the sweep does
    stack.worker(concurrency=2)
    app = make_celery(settings)
    app.send_task("calehr.drain", args=[probe, "ehr"])
    total = sum(len(v) for v in want.values())
    most_woken = 0

    def drained() -> bool:
        nonlocal most_woken
        most_woken = max(most_woken, rclient.zcard(waiters.waking("ehr")))
        return len(list(out.glob("*.hl7"))) >= total

    wait_for(drained, 120, 0.2, f"{total} messages")
    seen: dict[str, list[str]] = defaultdict(list)
    control_ids = []
    for m in sim_messages(out):
        seen[m["placer"]].append(m["event"])
        control_ids.append(m["control_id"])
    assert len(control_ids) == len(set(control_ids)) == total  # none lost, none twice
    assert dict(seen) == want  # S12 before S13 for every rescheduled appointment
    assert most_woken <= WAKE_IN_FLIGHT + 1  # and the probe
    wait_for(lambda: waiters.counts("ehr") == (0, 0), 10, 0.1, "no queue left waiting")
    assert rclient.scard(rt.ledger.pending_index) == 0
    assert rclient.hget("calehr:sweep:last", "at") == swept_at  # no sweep ran
    app.close()


def test_a_sweep_killed_halfway_blocks_the_next_only_for_a_short_lock(stack, outbox, tmp_path,
                                                                      rclient):
    # stuck_event_seconds at its default (60): the sweep lock used to last that long
    stack.write_config(mllp_config(outbox, free_port(), delivery="stuck_event_seconds = 60.0"))
    log = tmp_path / "faults.log"
    env = {**stack.env, "CALEHR_FAULTS": "sweep_mid:1", "CALEHR_FAULT_LOG": str(log)}
    doomed = Proc("doomed", worker_cmd(1, "doomed"), env, stack.log_dir)
    stack.procs.append(doomed)
    wait_for(lambda: "ready." in doomed.output(), 60, 0.1, "the doomed worker to be ready")
    stack.beat()
    wait_for(lambda: log.exists() and "sweep_mid" in log.read_text(), 60, 0.1, "a sweep to die")
    died = time.monotonic()
    doomed.kill9()
    hold_ms = rclient.pttl("calehr:lock:sweep")
    assert 0 < hold_ms <= 5000  # the dead sweep's lock: seconds, not stuck_event_seconds
    assert rclient.hget("calehr:sweep:last", "at") is None  # it never finished
    stack.worker("clean")
    wait_for(lambda: rclient.hget("calehr:sweep:last", "at"), 30, 0.1, "the next sweep")
    assert time.monotonic() - died < 30
