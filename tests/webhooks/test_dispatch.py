"""The dispatcher (webhooks/dispatch.py): ids the store's script queued go to the workers in
batches, off the request path; a dispatcher that dies loses nothing; one poison event in a
batch holds back none of the others. Real Redis, real Celery publishes and worker processes."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import hl7
import pytest
import redis

from calehr.queue import make_send_batch
from core.config import Settings
from core.crypto import Cipher
from core.store import EventStore
from tests.factories import appointment_bodies, placer_of
from tests.support import PHI_STRINGS, config_text, wait_for
from tests.worker.helpers import dead_letters
from webhooks.dispatch import (
    QUEUE_AHEAD,
    TASK_MAX,
    dispatch_once,
    split,
    start_dispatcher,
)


def store_for(settings: Settings, r: redis.Redis) -> EventStore:
    return EventStore(r, Cipher(settings.security.encryption_keys), settings.key_prefix)


def put_created(store: EventStore, n: int, tag: str) -> list[str]:
    """What the webhook's script does: store each body and queue its id, in one write."""
    return [store.put(appointment_bodies(i, tag)["created"], "BOOKING_CREATED", dispatch=True)[0]
            for i in range(n)]


def broker_tasks(r: redis.Redis) -> list[tuple[str, list[str], str]]:
    """(task name, args, the raw message) of every Celery message waiting, oldest first."""
    found = []
    for raw in reversed(r.lrange("calehr", 0, -1)):  # kombu LPUSHes, workers BRPOP
        msg = json.loads(raw)
        body = base64.b64decode(msg["body"]).decode()
        (event_ids,), _kwargs, _embed = json.loads(body)
        found.append((msg["headers"]["task"], event_ids, raw.decode() + body))
    return found


def outbox_placers(outbox: Path) -> list[str]:
    return sorted(str(hl7.parse(p.read_bytes().decode())["SCH.F1.R1.C1"])
                  for p in outbox.glob("*.hl7"))


def wait_all_done(rclient: redis.Redis, ids: list[str], what: str) -> None:
    wait_for(lambda: all(rclient.hget(f"calehr:event:{e}", "state") == b"done" for e in ids),
             60, 0.1, what)


def stack_store(stack, outbox: Path,  # noqa: ANN001 - the conftest Stack
                rclient: redis.Redis) -> tuple[Settings, EventStore]:
    """The stack configured with the file-drop EHR, and an event store on its Redis."""
    stack.write_config(config_text(outbox))
    settings = stack.settings()
    return settings, store_for(settings, rclient)


def test_split_keeps_order_and_spreads_a_burst_evenly() -> None:
    ids = [str(i) for i in range(100)]
    chunks = split(ids, 16, 4)
    assert [len(c) for c in chunks] == [15, 15, 15, 15, 15, 15, 10]
    assert [i for c in chunks for i in c] == ids
    assert [len(c) for c in split(ids[:8], 16, 4)] == [2, 2, 2, 2]  # every worker gets some
    assert [len(c) for c in split(ids[:3], 16, 4)] == [1, 1, 1]
    assert split([], 16, 4) == [] and split(["a"], 16, 4) == [["a"]]


def test_dispatcher_sends_every_queued_id_once_in_batches_of_ids_only(
        tmp_path: Path, redis_url: str, rclient: redis.Redis) -> None:
    settings = Settings.from_toml(config_text(tmp_path / "outbox"), {"REDIS_URL": redis_url})
    store = store_for(settings, rclient)
    ids = put_created(store, 40, "D")
    assert rclient.llen("calehr") == 0  # nothing published on the request path
    assert dispatch_once(store, make_send_batch(settings), wait=0.1) == 40
    tasks = broker_tasks(rclient)
    assert {name for name, _, _ in tasks} == {"calehr.process_events"}
    assert all(len(args) <= TASK_MAX for _, args, _ in tasks) and len(tasks) == 4
    assert [i for _, args, _ in tasks for i in args] == ids  # each once, in arrival order
    assert rclient.llen(store.dispatch_key) == 0
    for phi in PHI_STRINGS:
        assert all(phi not in raw for _, _, raw in tasks)
    assert dispatch_once(store, make_send_batch(settings), wait=0.1) == 0  # nothing twice


@pytest.mark.slow
def test_ids_taken_by_a_dispatcher_that_died_are_still_delivered(
        stack, outbox: Path, rclient: redis.Redis) -> None:
    stack.write_config(config_text(outbox, delivery="stuck_event_seconds = 1.0"))
    store = store_for(stack.settings(), rclient)
    ids = put_created(store, 3, "K")
    assert store.take_dispatch(10, 0.1) == ids  # popped, then the dispatcher died: no task
    assert rclient.llen("calehr") == 0
    stack.worker()
    stack.beat()  # the sweep finds them in the unprocessed set
    wait_all_done(rclient, ids, "the three events done")
    assert outbox_placers(outbox) == sorted(placer_of(i, "K") for i in range(3))


@pytest.mark.slow
def test_a_poison_event_in_a_batch_is_dead_lettered_and_the_others_delivered(
        stack, outbox: Path, rclient: redis.Redis) -> None:
    settings, store = stack_store(stack, outbox, rclient)
    good = put_created(store, 3, "P")
    poison, _ = store.put(b'{"triggerEvent": "BOOKING_CREATED", "payload": 7}',
                          "BOOKING_CREATED", dispatch=True)
    batch = [good[0], poison, *good[1:]]
    store.take_dispatch(10, 0.1)
    make_send_batch(settings)(batch)  # as the dispatcher sends it: one task, four ids
    stack.worker(concurrency=1)  # no beat: the one task must do it all
    wait_all_done(rclient, good, "the three good events done")
    assert outbox_placers(outbox) == sorted(placer_of(i, "P") for i in range(3))
    assert rclient.hget(f"calehr:event:{poison}", "state") == b"dead"
    assert [(d["event_id"], d["stage"]) for d in dead_letters(rclient)] == [(poison, "ingest")]


@pytest.mark.slow
def test_a_batch_task_claims_the_ids_still_waiting_in_the_dispatch_list(
        stack, outbox: Path, rclient: redis.Redis) -> None:
    """Under load the workers take queued ids themselves: one task, no dispatcher, no beat."""
    settings, store = stack_store(stack, outbox, rclient)
    ids = put_created(store, 6, "C")
    first = store.take_dispatch(1, 0.1)
    assert first == ids[:1]
    make_send_batch(settings)(first)
    stack.worker(concurrency=1)
    wait_all_done(rclient, ids, "all six events done")
    assert outbox_placers(outbox) == sorted(placer_of(i, "C") for i in range(6))
    assert rclient.llen(store.dispatch_key) == 0


def test_dispatcher_holds_back_while_the_workers_have_a_queue(
        tmp_path: Path, redis_url: str, rclient: redis.Redis) -> None:
    """Back-pressure: with QUEUE_AHEAD tasks waiting, ids stay in the list (for the workers to
    claim); once the queue is short, the dispatcher sends them."""
    settings = Settings.from_toml(config_text(tmp_path / "outbox"), {"REDIS_URL": redis_url})
    store = store_for(settings, rclient)
    send = make_send_batch(settings)
    for n in range(QUEUE_AHEAD):
        send([f"ev_busy{n}"])
    ids = put_created(store, 3, "Q")
    assert dispatch_once(store, send, wait=0.1, broker_queue="calehr") == 0
    assert rclient.llen(store.dispatch_key) == 3
    rclient.delete("calehr")  # the workers took the queue
    assert dispatch_once(store, send, wait=0.1, broker_queue="calehr") == 3
    assert [i for _, args, _ in broker_tasks(rclient) for i in args] == ids


def test_a_held_back_dispatcher_checks_the_queue_less_and_less_often_then_resumes(
        tmp_path: Path, redis_url: str, rclient: redis.Redis) -> None:
    """While the workers' queue stays long, the dispatcher's thread backs off (20 ms doubling
    to BUSY_PAUSE_MAX_SECONDS) instead of asking Redis 50 times a second; once the queue is
    short it sends the waiting ids within about one pause."""
    settings = Settings.from_toml(config_text(tmp_path / "outbox"), {"REDIS_URL": redis_url})
    store = store_for(settings, rclient)
    send = make_send_batch(settings)
    for n in range(QUEUE_AHEAD):
        send([f"ev_busy{n}"])
    ids = put_created(store, 2, "B")

    def llen_calls() -> int:
        return int(rclient.info("commandstats").get("cmdstat_llen", {}).get("calls", 0))

    before = llen_calls()
    stop = start_dispatcher(store, send)
    try:
        time.sleep(1.5)  # the window being measured, not a wait for something to happen
        checks = llen_calls() - before
        assert 3 <= checks <= 20, checks  # every 20 ms it would be about 75
        assert rclient.llen(store.dispatch_key) == 2
        rclient.delete("calehr")  # the workers took the queue
        wait_for(lambda: rclient.llen(store.dispatch_key) == 0, 5, 0.02, "the ids sent")
        assert [i for _, args, _ in broker_tasks(rclient) for i in args] == ids
    finally:
        stop.set()
