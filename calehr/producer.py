"""A Runtime for processes that are not workers (CLI, console): it sends tasks by name."""

from __future__ import annotations

from core.config import Settings
from core.runtime import Runtime
from worker.factory import make_celery


def make_client_runtime(settings: Settings) -> Runtime:
    celery = make_celery(settings)

    def kick(key: str, target: str, countdown: float | None) -> None:
        celery.send_task("calehr.drain", args=[key, target], countdown=countdown)

    def reprocess(event_id: str, force: bool) -> None:
        celery.send_task("calehr.process_event", args=[event_id], kwargs={"force": force})

    return Runtime.build(settings, kick, reprocess)
