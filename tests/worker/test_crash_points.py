"""Crash points with real processes: a worker dies at a named step (core/faults.py) and a clean
worker plus the beat sweep finish the work. No step may rely on the task that started it."""

from __future__ import annotations

from collections import defaultdict

import pytest

from tests.factories import appointment_bodies, placer_of, sim_messages
from tests.support import Proc, free_port, mllp_config, post_signed, wait_for, worker_cmd
from tests.worker.helpers import dead_letters

pytestmark = pytest.mark.slow


def doomed_worker(stack, point: str) -> tuple[Proc, object]:
    log = stack.tmp / f"faults-{point}.log"
    env = {**stack.env, "CALEHR_FAULTS": f"{point}:1", "CALEHR_FAULT_LOG": str(log)}
    proc = Proc(f"doomed-{point}", worker_cmd(1, f"doomed-{point}"), env, stack.log_dir)
    stack.procs.append(proc)
    wait_for(lambda: "ready." in proc.output(), 60, 0.1, "the doomed worker to be ready")
    return proc, log


def events_of(out, placer: str) -> list[str]:
    return [m["event"] for m in sim_messages(out) if m["placer"] == placer]


def test_worker_killed_after_accepting_the_create_still_wakes_the_parked_changes(
        stack, outbox, tmp_path, rclient):
    """The reported loss: reschedule and cancel wait for the create; the worker that accepts
    the create dies before it wakes them. They must still go out, in order, with no dead letter."""
    port = free_port()
    out = tmp_path / "ehr"
    stack.write_config(mllp_config(outbox, port, delivery="stuck_event_seconds = 1.0\n"
                                                         "appointment_lock_seconds = 2.0"))
    stack.ehr_sim(port, out)
    base = stack.web()
    clean = stack.worker("first")
    b = appointment_bodies(1, "W")
    waiting = [post_signed(base, b[k]).json()["event_id"] for k in ("rescheduled", "cancelled")]
    for event_id in waiting:
        wait_for(lambda e=event_id: rclient.hget(f"calehr:event:{e}", "state") == b"waiting", 30,
                 message="the changes to wait for their create")
    clean.stop()

    doomed, log = doomed_worker(stack, "after_commit_before_unpark")
    created = post_signed(base, b["created"]).json()["event_id"]
    wait_for(lambda: log.exists(), 30, message="the worker to die after the accept")
    doomed.kill9()  # its message stays unacknowledged until the visibility timeout (60 s)
    assert rclient.hget(f"calehr:event:{created}", "state") == b"accepted"  # the only accept
    assert sim_messages(out) == []

    stack.worker("second")
    stack.beat()
    wait_for(lambda: events_of(out, placer_of(1, "W")) == ["S12", "S13", "S15"], 45, 0.1,
             "S12, S13, S15 at the EHR")
    assert dead_letters(rclient) == []
    for event_id in [created, *waiting]:
        wait_for(lambda e=event_id: rclient.hget(f"calehr:event:{e}", "state") == b"done", 15,
                 message=f"{event_id} done")


def test_worker_killed_between_send_and_commit_resends_under_the_same_msh10(
        stack, outbox, tmp_path, rclient):
    port = free_port()
    out = tmp_path / "ehr"
    stack.write_config(mllp_config(outbox, port, delivery="stuck_event_seconds = 1.0\n"
                                                         "lock_ttl_seconds = 2.0"))
    stack.ehr_sim(port, out)
    base = stack.web()
    doomed, log = doomed_worker(stack, "after_send_before_commit")
    b = appointment_bodies(2, "W")
    created = post_signed(base, b["created"]).json()["event_id"]
    wait_for(lambda: log.exists() and sim_messages(out), 30, message="sent, then the crash")
    doomed.kill9()
    stack.worker("second")
    stack.beat()
    wait_for(lambda: rclient.hget(f"calehr:event:{created}", "state") == b"done", 45, 0.1,
             "the create done")
    ids = defaultdict(int)
    for m in sim_messages(out):
        ids[m["control_id"]] += 1
    assert len(ids) == 1 and next(iter(ids.values())) >= 2  # sent again, same MSH-10
    assert dead_letters(rclient) == []
