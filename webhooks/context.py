"""What the Flask app needs at run time, built once in create_app."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

import redis
from flask import current_app

from core.config import Settings
from core.faults import crash_point
from core.interfaces import EhrServices
from core.metrics import Metrics
from core.replication import confirm
from core.spool import IngestSpool
from core.store import EventStore

log = logging.getLogger(__name__)


@dataclass
class BridgeContext:
    settings: Settings
    redis: redis.Redis
    store: EventStore
    enqueue: Callable[[str], None]
    metrics: Metrics
    spool: IngestSpool | None = None
    ehr_services: EhrServices | None = None  # FHIR inbound's busy blocks and EHR changes
    # True: the store's script appends new ids to its dispatch list and a dispatcher thread
    # (webhooks/dispatch.py) hands them to the workers in batches, off the request path
    dispatch: bool = False

    def accept(self, raw: bytes, trigger: str, *, handled: bool, source: str = "webhook",
               received_at: float | None = None,
               counter: tuple[str, str] | None = None) -> tuple[str, bool]:
        """Store a verified body and queue its id (unless a duplicate, or a trigger the bridge
        does not handle). Returns (event_id, duplicate). Redis errors from the store raise;
        a failed enqueue does not: the event is stored and the sweeper queues it.
        `counter`: (metric label, outcome if stored) of the `webhooks` counter, counted in the
        store's script (a duplicate counts as "duplicate")."""
        count = None
        if counter is not None:
            label, outcome = counter
            count = (f"{self.metrics.p}:webhooks", json.dumps((label, outcome)),
                     json.dumps((label, "duplicate" if handled else outcome)))
        event_id, duplicate = self.store.put(raw, trigger, source=source, received_at=received_at,
                                             state="received" if handled else "ignored",
                                             dispatch=self.dispatch, counter=count)
        if handled and not duplicate and self.dispatch:
            crash_point("after_accept")  # queued with the write (the dispatch list)
        elif handled and not duplicate:
            crash_point("after_accept")  # stored, not queued: the sweep must take it up
            try:
                self.enqueue(event_id)
            except Exception as exc:  # noqa: BLE001 - stored already; the sweeper picks it up
                log.error("enqueue failed, left for the sweeper: %s", exc.__class__.__name__,
                          extra={"event_id": event_id})
        confirm(self.redis, self.settings.redis, self.settings.key_prefix)  # else: spooled
        return event_id, duplicate


def bridge() -> BridgeContext:
    return current_app.extensions["calehr"]
