"""Sending work to the workers: the Celery message carries the event id only (claim check)."""

from __future__ import annotations

from collections.abc import Callable

from core.config import Settings

PROCESS_EVENT = "calehr.process_event"
PROCESS_EVENTS = "calehr.process_events"  # a batch of ids (the dispatcher)


def make_enqueue(settings: Settings) -> Callable[[str], None]:
    from worker.factory import make_celery

    celery = make_celery(settings)

    def enqueue(event_id: str) -> None:
        celery.send_task(PROCESS_EVENT, args=[event_id])

    return enqueue


def make_send_batch(settings: Settings) -> Callable[[list[str]], None]:
    """For the dispatcher: one task per batch of event ids."""
    from worker.factory import make_celery

    celery = make_celery(settings)

    def send_batch(event_ids: list[str]) -> None:
        celery.send_task(PROCESS_EVENTS, args=[event_ids])

    return send_batch
