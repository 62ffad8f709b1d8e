"""What the Flask app needs at run time, built once in create_app."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import redis
from flask import current_app

from core.config import Settings
from core.metrics import Metrics
from core.spool import IngestSpool
from core.store import EventStore


@dataclass
class BridgeContext:
    settings: Settings
    redis: redis.Redis
    store: EventStore
    enqueue: Callable[[str], None]
    metrics: Metrics
    spool: IngestSpool | None = None


def bridge() -> BridgeContext:
    return current_app.extensions["calehr"]
