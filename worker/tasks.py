"""Celery tasks. Arguments are ids only (claim check): never patient data."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import Counter
from collections.abc import Callable

import redis
from celery import Celery, Task

from core import clock
from core.config import Settings
from core.runtime import Runtime
from worker import delivery, pipeline
from worker.batch import process_batch
from worker.drain_batch import drain_many
from worker.sweep import sweep

log = logging.getLogger(__name__)

_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def register(app: Celery, settings: Settings) -> None:
    def kick(key: str, target: str, countdown: float | None) -> None:
        app.send_task("calehr.drain", args=[key, target], countdown=countdown)

    def reprocess(event_id: str, force: bool) -> None:
        app.send_task("calehr.process_event", args=[event_id], kwargs={"force": force})

    def kick_many(keys: list[str], target: str) -> None:
        app.send_task("calehr.drain_many", args=[keys, target])

    def rt() -> Runtime:
        global _runtime
        if _runtime is None:  # built lazily: after the prefork, one per child process
            with _runtime_lock:  # the threads pool: one Runtime (and MLLP socket) per process
                if _runtime is None:
                    _runtime = Runtime.build(settings, kick, reprocess, kick_many=kick_many)
        return _runtime

    @app.task(name="calehr.process_event", bind=True, max_retries=None)
    def process_event(self: Task, event_id: str, force: bool = False) -> str:
        try:
            return pipeline.process_event(rt(), event_id, force=force)
        except pipeline.AppointmentBusy as exc:
            raise self.retry(countdown=0.5, exc=exc) from None
        except redis.RedisError as exc:
            raise self.retry(countdown=min(30, 2 ** min(self.request.retries, 5)), exc=exc) from None

    @app.task(name="calehr.process_events", bind=True, max_retries=None)
    def process_events(self: Task, event_ids: list[str]) -> dict:
        """A batch from the dispatcher: each event on its own, so one that fails holds back
        none of the others (a poison body is dead-lettered by process_event itself)."""
        return run_batch(rt(), event_ids, reprocess)

    @app.task(name="calehr.drain", bind=True, max_retries=None)
    def drain(self: Task, key: str, target: str) -> str:
        try:
            return delivery.drain(rt(), key, target)
        except redis.RedisError as exc:
            raise self.retry(countdown=min(30, 2 ** min(self.request.retries, 5)), exc=exc) from None

    @app.task(name="calehr.drain_many", bind=True, max_retries=None)
    def drain_many_task(self: Task, keys: list[str], target: str) -> str:
        """Queues woken together (a circuit closed): their first messages in one batch."""
        try:
            drain_many(rt(), [(key, target, {}) for key in keys])
        except redis.RedisError as exc:
            raise self.retry(countdown=min(30, 2 ** min(self.request.retries, 5)), exc=exc) from None
        return "done"

    @app.task(name="calehr.reconcile", bind=True, max_retries=0)
    def reconcile_task(self: Task) -> dict:
        return run_reconcile(rt())

    @app.task(name="calehr.tick", bind=True, max_retries=0)
    def tick(self: Task) -> dict:
        r = rt()
        # short: a worker killed mid-sweep must not stop the sweeps that rescue its work for
        # long (two sweeps at once only kick twice, and every step of a sweep is safe to repeat);
        # a sweep is bounded (worker/sweep.py), so it ends well within this
        hold = min(float(settings.worker.task_soft_time_limit),
                   max(5.0, 2 * settings.delivery.sweep_interval_seconds))
        lock = r.redis.lock(f"{settings.key_prefix}:lock:sweep", timeout=hold, blocking=False)
        if not lock.acquire():
            return {"skipped": "running"}
        try:
            return sweep(r)
        finally:
            with contextlib.suppress(redis.exceptions.LockError):  # it ran longer than `hold`
                lock.release()


CLAIM_MAX = 64  # ids one batch task may take from the dispatch list besides its own
CLAIM_SECONDS = 5.0  # and for how long: far below any task time limit
CLAIM_STEP = 16  # ids taken at a time (a batch of their own; the other workers claim too)


def run_batch(rt: Runtime, event_ids: list[str],
              resend: Callable[[str, bool], None]) -> dict[str, int]:
    """The ids as one batch (worker/batch.py), then ids still waiting in the dispatch list
    (claimed here directly: under load, fewer tasks per booking). In the batch, an event off
    the common case runs on its own, as process_event: a busy appointment or a Redis error
    sends that id again as its own task (its retries back off there); anything else is logged
    and left to the sweep (the event stays in the unprocessed set, as a claimed id does if this
    process dies)."""
    outcomes: Counter[str] = Counter()
    todo = list(event_ids)
    claimed, until = 0, clock.now() + CLAIM_SECONDS
    while todo:
        _run_some(rt, todo, resend, outcomes)
        todo = []
        if claimed < CLAIM_MAX and clock.now() < until:
            with contextlib.suppress(redis.RedisError):  # the dispatcher sends what is left
                todo = rt.store.take_dispatch(min(CLAIM_STEP, CLAIM_MAX - claimed), 0)
            claimed += len(todo)
    if claimed:
        outcomes["claimed"] = claimed
    return dict(outcomes)


def _run_some(rt: Runtime, event_ids: list[str], resend: Callable[[str, bool], None],
              outcomes: Counter[str]) -> None:
    try:
        outcomes.update(process_batch(rt, event_ids, lambda i: _run_one(rt, i, resend)))
    except Exception as exc:  # noqa: BLE001 - each again on its own: every step is safe to repeat
        log.warning("batch failed, its events run one by one: %s", exc.__class__.__name__,
                    extra={"events": len(event_ids)})
        for event_id in event_ids:
            outcomes[_run_one(rt, event_id, resend)] += 1


def _run_one(rt: Runtime, event_id: str, resend: Callable[[str, bool], None]) -> str:
    """One event on its own; returns its outcome."""
    try:
        return pipeline.process_event(rt, event_id)
    except (pipeline.AppointmentBusy, redis.RedisError) as exc:
        try:
            resend(event_id, False)
        except Exception:  # noqa: BLE001 - the sweep sends it after stuck_event_seconds
            log.warning("resend failed, left for the sweep: %s", exc.__class__.__name__,
                        extra={"event_id": event_id})
        return "resent"
    except Exception:  # noqa: BLE001 - one bad event must not hold back the batch
        log.exception("process_event failed, left for the sweep", extra={"event_id": event_id})
        return "failed"


def run_reconcile(rt: Runtime) -> dict:
    """One reconciliation run at a time, and none while Cal.com asked us to back off."""
    from adapters.calcom.bookings import BookingsClient
    from worker.reconcile import reconcile

    p = rt.settings.key_prefix
    if rt.redis.exists(f"{p}:reconcile:not-before"):
        return {"skipped": "rate_limited"}
    lock = rt.redis.lock(f"{p}:lock:reconcile", timeout=300, blocking=False)
    if not lock.acquire():
        return {"skipped": "running"}
    try:
        return reconcile(rt, BookingsClient(rt.settings.calcom))
    finally:
        lock.release()
