"""GET /metrics: Prometheus text, the same numbers from whichever web process answers."""

from __future__ import annotations

import redis
from flask import Blueprint, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

from core import clock
from core.deadletters import DeadLetterStore
from core.metrics import BridgeCollector
from webhooks.context import BridgeContext, bridge

bp = Blueprint("metrics", __name__)


def _gauges(ctx: BridgeContext):
    def read():
        r, p = ctx.redis, ctx.settings.key_prefix
        dls = DeadLetterStore(r, ctx.store.cipher, p)
        now = clock.now()
        circuits = []
        for t in ctx.settings.targets:
            until = float(r.hget(f"{p}:circuit:{t.name}", "open_until") or 0)
            circuits.append(((t.name,), 1.0 if until and until > now else 0.0))
        return [
            ("calehr_dead_letters_open", "Dead letters waiting for a person", ("reason",),
             [((reason,), n) for reason, n in dls.counts_by_reason("open").items()]),
            ("calehr_task_queue_depth", "Celery messages waiting in the broker queue", (),
             [((), r.llen("calehr"))]),
            ("calehr_delivery_queues_busy", "Appointment/target queues with pending work", (),
             [((), r.scard(f"{p}:pending-index"))]),
            ("calehr_retries_scheduled", "Queues waiting for a retry or an order wait", (),
             [((), r.zcard(f"{p}:due"))]),
            ("calehr_events_unprocessed", "Stored events no worker has taken up yet", (),
             [((), r.zcard(ctx.store.keys.unprocessed))]),
            ("calehr_circuit_open", "1 while the target's circuit breaker is open", ("target",),
             circuits),
            ("calehr_spool_bytes", "Webhooks spooled on this host while Redis was down (per host: "
             "sum over hosts; every other figure is shared)", (),
             [((), ctx.spool.size() if ctx.spool else 0)]),
        ]
    return read


@bp.get("/metrics")
def metrics() -> Response:
    ctx = bridge()
    registry = CollectorRegistry()
    registry.register(BridgeCollector(ctx.metrics, _gauges(ctx)))
    try:
        body = generate_latest(registry)
    except redis.RedisError:
        return Response("# redis unreachable\n", status=503, mimetype="text/plain")
    return Response(body, mimetype=CONTENT_TYPE_LATEST)
