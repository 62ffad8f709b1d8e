"""Celery tasks. Arguments are ids only (claim check): never patient data."""

from __future__ import annotations

import contextlib
import logging

import redis
from celery import Celery, Task

from core.config import Settings
from core.runtime import Runtime
from worker import delivery, pipeline
from worker.sweep import sweep

log = logging.getLogger(__name__)

_runtime: Runtime | None = None


def register(app: Celery, settings: Settings) -> None:
    def kick(key: str, target: str, countdown: float | None) -> None:
        app.send_task("calehr.drain", args=[key, target], countdown=countdown)

    def reprocess(event_id: str, force: bool) -> None:
        app.send_task("calehr.process_event", args=[event_id], kwargs={"force": force})

    def rt() -> Runtime:
        global _runtime
        if _runtime is None:  # built lazily: after the prefork, one per child process
            _runtime = Runtime.build(settings, kick, reprocess)
        return _runtime

    @app.task(name="calehr.process_event", bind=True, max_retries=None)
    def process_event(self: Task, event_id: str, force: bool = False) -> str:
        try:
            return pipeline.process_event(rt(), event_id, force=force)
        except pipeline.AppointmentBusy as exc:
            raise self.retry(countdown=0.5, exc=exc) from None
        except redis.RedisError as exc:
            raise self.retry(countdown=min(30, 2 ** min(self.request.retries, 5)), exc=exc) from None

    @app.task(name="calehr.drain", bind=True, max_retries=None)
    def drain(self: Task, key: str, target: str) -> str:
        try:
            return delivery.drain(rt(), key, target)
        except redis.RedisError as exc:
            raise self.retry(countdown=min(30, 2 ** min(self.request.retries, 5)), exc=exc) from None

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
