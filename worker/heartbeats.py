"""Heartbeats for the Celery worker and beat processes (see core/heartbeat.py)."""

from __future__ import annotations

from typing import Any

from celery.signals import beat_init, worker_ready, worker_shutdown

from core.config import Settings
from core.heartbeat import Heartbeat, start_heartbeat

_running: list[Heartbeat] = []


def install_heartbeats(settings: Settings) -> None:
    def on_worker_ready(**_: Any) -> None:
        _start(settings, "worker")

    def on_beat_init(**_: Any) -> None:
        _start(settings, "beat")

    def on_worker_shutdown(**_: Any) -> None:
        while _running:
            _running.pop().stop()

    # weak=False: the closures live only here
    worker_ready.connect(on_worker_ready, weak=False)
    beat_init.connect(on_beat_init, weak=False)
    worker_shutdown.connect(on_worker_shutdown, weak=False)


def _start(settings: Settings, component: str) -> None:
    beat = start_heartbeat(settings, component)
    if beat is not None:
        _running.append(beat)
