"""Moves spooled webhooks into the event store once Redis answers again (one thread per process)."""

from __future__ import annotations

import logging
import threading

import redis

from adapters.calcom.payload import parse_body
from core.errors import PayloadError
from core.faults import crash_point
from core.spool import SpooledRequest
from webhooks.context import BridgeContext

log = logging.getLogger(__name__)


def drain_once(ctx: BridgeContext) -> int:
    if ctx.spool is None or not ctx.spool.has_records():
        return 0

    def put(item: SpooledRequest) -> None:
        try:
            handled = parse_body(item.raw).handled
        except PayloadError:
            handled = True  # it was valid when spooled; let the worker dead-letter it clearly
        event_id, duplicate = ctx.accept(item.raw, item.trigger, handled=handled,
                                         source="spool", received_at=item.received_at)
        log.info("spooled webhook stored", extra={"event_id": event_id,
                                                  "spool_id": item.spool_id,
                                                  "outcome": "duplicate" if duplicate else "stored"})
        crash_point("spool_drain")  # stored, the spool file not yet removed: a re-drain dedupes

    def torn(spans: int, size: int, where) -> None:
        log.error("%d torn spool record(s) skipped: %d bytes kept in quarantine/%s", spans, size,
                  where.name, extra={"outcome": "torn"})
        ctx.metrics.inc("spool_torn", amount=spans)

    try:
        ctx.redis.ping()
        moved = ctx.spool.drain(put, torn)
    except redis.RedisError:
        return 0
    if moved:
        log.warning("drained %d spooled webhook(s) into the event store", moved)
    return moved


def start_drainer(ctx: BridgeContext, interval: float) -> threading.Event:
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(interval):
            try:
                drain_once(ctx)
            except Exception:  # noqa: BLE001 - the drainer must outlive one bad round
                log.exception("spool drain failed; will retry")

    threading.Thread(target=run, name="spool-drainer", daemon=True).start()
    return stop
