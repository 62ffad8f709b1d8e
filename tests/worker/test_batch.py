"""The batch path (worker/batch.py, worker/drain_batch.py) on a real Redis and a file-drop EHR.

It must end where processing the events one by one ends, and do it in a fixed number of
transactions per batch, whatever the batch's size.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.config import Settings
from core.deliveries import Delivery, control_id_for
from core.ehr_echo import EhrEchoLedger
from core.runtime import Runtime
from tests.support import base_env, config_text, fixture_bytes
from worker import drain_batch, pipeline
from worker.batch import process_batch

CREATED_UID, MOVED_UID = b"7xQm2kVd9RbTn4FgHs1LpA", b"Q3pW8nZk1sYc5VdTe7HbMu"
KINDS = ("02_booking_created.json", "04_booking_rescheduled.json", "05_booking_cancelled.json")


def body(kind: int, appointment: int) -> bytes:
    """Created, rescheduled or cancelled (kind 0, 1, 2) of an appointment of its own."""
    raw = fixture_bytes(KINDS[kind])
    return raw.replace(CREATED_UID, f"C{appointment:021d}".encode()).replace(
        MOVED_UID, f"R{appointment:021d}".encode())


def make_runtime(redis_url: str, tmp_path: Path, name: str) -> Runtime:
    outbox = tmp_path / f"{name}-outbox"
    outbox.mkdir()
    config = tmp_path / f"{name}.toml"
    config.write_text(config_text(outbox, prefix=name))
    queued: list[str] = []
    rt = Runtime.build(Settings.load(base_env(config, redis_url)), kick=lambda *_: None,
                       reprocess=lambda event_id, force: queued.append(event_id))
    rt.queued = queued  # type: ignore[attr-defined]
    rt.outbox = outbox  # type: ignore[attr-defined]
    return rt


@pytest.fixture
def pair(redis_url: str, tmp_path: Path) -> tuple[Runtime, Runtime]:
    return make_runtime(redis_url, tmp_path, "single"), make_runtime(redis_url, tmp_path, "batch")


def store(rt: Runtime, bodies: list[bytes]) -> list[str]:
    return [rt.store.put(b, "webhook")[0] for b in bodies]


def run_woken(rt: Runtime) -> None:
    """What the events' processing woke (a parked reschedule), as the task queue would."""
    for _ in range(50):
        if not rt.queued:  # type: ignore[attr-defined]
            return
        pipeline.process_event(rt, rt.queued.pop(0))  # type: ignore[attr-defined]


def outcome(rt: Runtime, ids: list[str]) -> tuple[list[str], dict[str, list[int]]]:
    """Each event's final state, and per appointment the events the EHR got, in order."""
    states = [rt.store.state(i) for i in ids]
    by_control = {control_id_for(f"{i}.files"): n for n, i in enumerate(ids)}
    delivered: dict[str, list[int]] = {}
    for key in {rt.store.get(i).appointment_key for i in ids} - {""}:
        delivered[key] = [by_control[c] for c in rt.ledger.control_ids(key, "files")]
    return states, delivered


def multis(client: redis.Redis) -> int:
    return int(client.info("commandstats").get("cmdstat_multi", {}).get("calls", 0))


def test_a_batch_of_new_bookings_takes_three_transactions_not_three_per_booking(
        pair: tuple[Runtime, Runtime], rclient: redis.Redis) -> None:
    _, rt = pair
    ids = store(rt, [body(0, n) for n in range(12)])
    slow: list[str] = []
    before = multis(rclient)
    outcomes = process_batch(rt, ids, lambda i: slow.append(i) or "slow")
    assert outcomes == {"accepted": 12}
    assert slow == []
    # accept, start and commit: one MULTI each for the batch (one by one: 36)
    assert multis(rclient) - before == 3
    assert [rt.store.state(i) for i in ids] == ["done"] * 12
    assert len(list(rt.outbox.glob("*.hl7"))) == 12  # type: ignore[attr-defined]
    assert rclient.zcard(rt.store.keys.unprocessed) == 0


def test_what_is_off_the_common_case_takes_the_long_way_in_arrival_order(
        pair: tuple[Runtime, Runtime], rclient: redis.Redis) -> None:
    _, rt = pair
    busy_lock = rt.ledger.lock_name(f"appt:C{3:021d}")
    rclient.set(busy_lock, "another-worker", px=60_000)
    bodies = [body(0, 1), body(1, 1), b'{"triggerEvent": "BOOKING_CREATED", "payload": []}',
              body(0, 2), body(0, 3)]
    ids = [rt.store.put(b, "webhook")[0] for b in bodies]
    slow: list[str] = []

    def one(event_id: str) -> str:
        slow.append(event_id)
        try:
            return pipeline.process_event(rt, event_id)
        except pipeline.AppointmentBusy:
            return "busy"

    outcomes = process_batch(rt, ids, one)
    # the reschedule shares its appointment with an event before it; the body is poison; the
    # last appointment's lock is held elsewhere
    assert slow == [ids[1], ids[2], ids[4]]
    assert outcomes == {"accepted": 3, "dead": 1, "busy": 1}
    assert [rt.store.state(i) for i in ids] == ["done", "done", "dead", "done", "received"]
    assert rt.ledger.control_ids(f"C{1:021d}", "files") == [
        control_id_for(f"{ids[0]}.files"), control_id_for(f"{ids[1]}.files")]
    rclient.delete(busy_lock)
    assert process_batch(rt, [ids[4]], one) == {"accepted": 1}
    assert rt.store.state(ids[4]) == "done"


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_batches_end_where_one_by_one_ends(pair: tuple[Runtime, Runtime], rclient: redis.Redis,
                                           data: st.DataObject) -> None:
    """Any arrival order of created / rescheduled / cancelled for three appointments (with
    repeats), cut into batches anyhow: the same states, and the EHR gets the same messages in
    the same order per appointment, as processing the events one at a time."""
    single, batch = pair
    rclient.flushdb()
    for rt in pair:
        shutil.rmtree(rt.outbox)  # type: ignore[attr-defined]
        rt.outbox.mkdir()  # type: ignore[attr-defined]
        rt.queued.clear()  # type: ignore[attr-defined]
    events = data.draw(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2)),
                                min_size=1, max_size=12), label="(kind, appointment)")
    bodies = [body(kind, appt) for kind, appt in events]
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(bodies) - 1))), label="cuts"))

    one_ids = store(single, bodies)
    for event_id in one_ids:
        pipeline.process_event(single, event_id)
        run_woken(single)

    batch_ids = store(batch, bodies)
    run_one: Callable[[str], str] = lambda i: pipeline.process_event(batch, i)  # noqa: E731
    for start, end in zip([0, *cuts], [*cuts, len(batch_ids)], strict=True):
        process_batch(batch, batch_ids[start:end], run_one)
        run_woken(batch)

    assert outcome(batch, batch_ids) == outcome(single, one_ids)


def test_a_reschedule_before_its_booking_waits_for_it(pair: tuple[Runtime, Runtime]) -> None:
    _, rt = pair
    moved, created = store(rt, [body(1, 5), body(0, 5)])
    assert process_batch(rt, [moved], lambda i: pipeline.process_event(rt, i)) == {"waiting": 1}
    assert rt.store.state(moved) == "waiting"
    process_batch(rt, [created], lambda i: pipeline.process_event(rt, i))
    run_woken(rt)
    assert [rt.store.state(i) for i in (moved, created)] == ["done", "done"]
    assert rt.ledger.control_ids(f"C{5:021d}", "files") == [
        control_id_for(f"{created}.files"), control_id_for(f"{moved}.files")]


def test_a_failed_send_does_not_erase_what_the_ehr_made(pair: tuple[Runtime, Runtime]) -> None:
    """Found in review: the EHR cancelled the booking itself and the bridge cancelled it in
    Cal.com for it; a Cal.com change that then fails to reach the EHR must not make the bridge
    forget that (else Cal.com's cancel webhook, the echo, is sent back to the EHR)."""
    _, rt = pair
    created, = store(rt, [body(0, 9)])
    process_batch(rt, [created], lambda i: pipeline.process_event(rt, i))
    assert rt.store.state(created) == "done"
    key, uid = f"C{9:021d}", f"C{9:021d}"
    echoes = EhrEchoLedger(rt.redis, rt.settings.key_prefix)
    echoes.reported(key, "files", "cancelled")  # the EHR cancelled it
    echoes.made_in_calcom(key, "files", "cancelled", uid)  # and the bridge did so in Cal.com
    outbox: Path = rt.outbox  # type: ignore[attr-defined]
    shutil.rmtree(outbox)
    outbox.write_text("not a folder")  # every file drop now fails (transient)
    moved, = store(rt, [body(1, 9)])
    process_batch(rt, [moved], lambda i: pipeline.process_event(rt, i))
    d = rt.ledger.get_delivery(f"{moved}.files")
    assert d is not None and d.state == "pending" and d.attempts == 1  # failed, to be retried
    assert echoes.ehr_made(key, "files", "cancelled", uid)  # nothing reached the EHR


def test_a_batch_send_after_its_drain_lock_was_lost_does_not_go_out(
        pair: tuple[Runtime, Runtime], monkeypatch: pytest.MonkeyPatch) -> None:
    """Found in review: a batch holds its queues' drain locks through all its sends. When a
    later queue's lock expires (or goes with a failover) and another worker drains it (the
    booking, then a move behind it), the batch must not send the old head again, out of order,
    nor commit it twice."""
    _, rt = pair
    a, b = store(rt, [body(0, 1), body(0, 2)])
    key_b = f"C{2:021d}"
    real_send = drain_batch.send_attempt
    other: list[str] = []

    def slow_ehr(rt_: Runtime, d: Delivery, prep: object, attempt: int) -> object:
        if d.event_id == a and not other:  # the first send outlasts B's lock
            rt.redis.delete(rt.ledger.lock_name(f"drain:{key_b}|files"))
            moved, = store(rt, [body(1, 2)])  # meanwhile B is moved, and another worker
            other.append(moved)
            pipeline.process_event(rt, moved)  # accepts it and drains B: S12, then S13
        return real_send(rt_, d, prep, attempt)

    monkeypatch.setattr(drain_batch, "send_attempt", slow_ehr)
    process_batch(rt, [a, b], lambda i: pipeline.process_event(rt, i))
    assert rt.ledger.control_ids(key_b, "files") == [
        control_id_for(f"{b}.files"), control_id_for(f"{other[0]}.files")]
    assert rt.redis.hget(rt.store.keys.event(b), "open_deliveries") == b"0"
    assert rt.ledger.get_delivery(f"{b}.files").state == "delivered"
