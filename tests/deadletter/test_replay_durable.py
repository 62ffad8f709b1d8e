"""Replays must not depend on the process that started them: each re-queues in one step that a
crash cannot split, and the beat sweep finishes what a dead process left (real Redis, the real
pipeline, replay and sweep functions, a file target)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.config import Settings
from core.runtime import Runtime
from deadletter.replay import replay
from tests.support import base_env, config_text, fixture_bytes
from tests.worker.helpers import dead_letters
from worker import pipeline
from worker.sweep import sweep


@pytest.fixture
def rt(redis_url: str, outbox: Path, tmp_path: Path) -> Runtime:
    config = tmp_path / "calehr.toml"
    config.write_text(config_text(outbox))
    sent: list[tuple[str, bool]] = []
    runtime = Runtime.build(Settings.load(base_env(config, redis_url)), kick=lambda *_: None,
                            reprocess=lambda event_id, force: sent.append((event_id, force)))
    runtime.sent = sent  # type: ignore[attr-defined]
    return runtime


def test_an_event_replay_whose_task_is_lost_is_sent_again_by_the_sweep(rt: Runtime) -> None:
    body = json.loads(fixture_bytes("02_booking_created.json"))
    body["payload"]["attendees"] = 5  # a poison body: dead at ingest
    event_id, _ = rt.store.put(json.dumps(body).encode(), "BOOKING_CREATED")
    assert pipeline.process_event(rt, event_id) == "dead"
    (dl,) = dead_letters(rt.redis)
    replay(rt, dl["id"], "op@example", force=True)
    rt.sent.clear()  # the replay's Celery message is lost (the console process died)  # type: ignore[attr-defined]
    assert rt.redis.zscore(rt.store.keys.unprocessed, event_id) is not None
    rt.redis.zadd(rt.store.keys.unprocessed, {event_id: 1.0})  # older than stuck_event_seconds
    sweep(rt)
    assert rt.sent == [(event_id, True)]  # type: ignore[attr-defined]  # still forced


def test_a_delivery_replay_requeues_once_however_often_it_is_run(rt: Runtime, outbox: Path) -> None:
    event_id, _ = rt.store.put(fixture_bytes("02_booking_created.json"), "BOOKING_CREATED")
    assert pipeline.process_event(rt, event_id) == "accepted"
    (delivery_id,) = rt.ledger.deliveries_for_event(event_id)
    d = rt.ledger.get_delivery(delivery_id)
    assert d is not None and d.state == "delivered"
    event_hash = rt.store.keys.event(event_id)
    assert rt.ledger.requeue(d, force=True, event_hash=event_hash)
    assert not rt.ledger.requeue(d, force=True, event_hash=event_hash)  # queued already
    assert rt.redis.hget(event_hash, "open_deliveries") == b"1"
    assert rt.ledger.head(d.appointment_key, d.target) == delivery_id


def test_a_bulk_job_resumed_after_its_runner_died_mid_item_counts_that_item_replayed(
        rt: Runtime) -> None:
    from deadletter.console.jobs import BulkReplayJobs, run_job

    body = json.loads(fixture_bytes("02_booking_created.json"))
    body["payload"]["attendees"] = 5
    event_id, _ = rt.store.put(json.dumps(body).encode(), "BOOKING_CREATED")
    pipeline.process_event(rt, event_id)
    (dl,) = dead_letters(rt.redis)
    jobs = BulkReplayJobs(rt.redis, rt.settings.key_prefix)
    job_id = jobs.create("op@example", [dl["id"]], {})
    assert jobs.claim(job_id, "first-runner")
    assert jobs.next_id(job_id, "first-runner") == dl["id"]
    replay(rt, dl["id"], "op@example")  # went through; then the web process died
    rt.redis.delete(f"{rt.settings.key_prefix}:console:job:{job_id}:runner")  # its claim lapsed
    run_job(jobs, rt, job_id, "op@example")  # a person pressed resume
    job = jobs.get(job_id)
    assert job is not None and (job.state, job.replayed, job.refused) == ("done", 1, 0)
