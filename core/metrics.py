"""Metrics kept in Redis and exposed with prometheus-client.

Counters live in Redis hashes, so every gunicorn worker, Celery process and machine adds to the
same numbers and a scrape of any web process sees all of them. Gauges are read at scrape time.
Writes never raise: a metrics failure must not fail a webhook or a delivery.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from core import clock

LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)

COUNTERS = {
    "webhooks": ("calehr_webhooks_received", "Cal.com webhooks by trigger and outcome",
                 ("trigger", "outcome")),
    "deliveries": ("calehr_delivery_attempts", "EHR delivery attempts by target and outcome",
                   ("target", "outcome")),
    "retries": ("calehr_delivery_retries", "Transient failures scheduled for retry", ("target",)),
    "dead_letters": ("calehr_dead_letters_created", "Dead letters created by stage and code",
                     ("stage", "error_code")),
    "spool_torn": ("calehr_spool_torn_records", "Torn spool records (a crash mid-append) "
                   "moved to the spool's quarantine folder", ()),
}


class Metrics:
    def __init__(self, client: redis.Redis, prefix: str = "calehr") -> None:
        self.r = client
        self.p = f"{prefix}:metrics"

    def inc(self, name: str, *labels: str, amount: int = 1) -> None:
        with contextlib.suppress(redis.RedisError):
            self.r.hincrby(f"{self.p}:{name}", json.dumps(labels), amount)
            if name == "deliveries" and len(labels) == 2 and labels[1] != "ok":
                # for `calehr status`: when a target last failed, and how
                self.r.hset(self.last_key(labels[0]),
                            mapping={"error_at": repr(clock.now()), "error_outcome": labels[1]})

    def last_key(self, target: str) -> str:
        return f"{self.p}:last:{target}"

    def last(self, target: str) -> dict[str, str]:
        """{success_at, error_at, error_outcome} of a target, as far as recorded."""
        return {k.decode(): v.decode() for k, v in self.r.hgetall(self.last_key(target)).items()}

    def queue_delivered(self, pipe: redis.client.Pipeline, target: str,
                        latency: float | None) -> None:
        """Add a delivered message's counters to a pipeline the caller executes."""
        pipe.hincrby(f"{self.p}:deliveries", json.dumps((target, "ok")), 1)
        pipe.hset(self.last_key(target), "success_at", repr(clock.now()))
        if latency is not None:
            bucket = next((str(b) for b in LATENCY_BUCKETS if latency <= b), "+Inf")
            pipe.hincrby(f"{self.p}:latency", bucket, 1)
            pipe.hincrbyfloat(f"{self.p}:latency", "sum", latency)

    def counter(self, name: str) -> dict[tuple[str, ...], int]:
        raw = self.r.hgetall(f"{self.p}:{name}")
        return {tuple(json.loads(k)): int(v) for k, v in raw.items()}

    def latency(self) -> tuple[list[tuple[str, float]], float]:
        raw = {k.decode(): float(v) for k, v in self.r.hgetall(f"{self.p}:latency").items()}
        running, buckets = 0.0, []
        for b in [*map(str, LATENCY_BUCKETS), "+Inf"]:
            running += raw.get(b, 0.0)
            buckets.append((b, running))
        return buckets, raw.get("sum", 0.0)


class BridgeCollector(Collector):
    """What /metrics shows: the Redis counters plus gauges read now."""

    def __init__(self, metrics: Metrics, gauges) -> None:
        self.metrics = metrics
        self.gauges = gauges  # callable -> dict of gauge values

    def collect(self) -> Iterator:
        for name, (metric, doc, labels) in COUNTERS.items():
            family = CounterMetricFamily(metric, doc, labels=list(labels))
            for values, count in self.metrics.counter(name).items():
                family.add_metric(list(values), count)
            yield family
        buckets, total = self.metrics.latency()
        hist = HistogramMetricFamily("calehr_end_to_end_seconds",
                                     "Webhook received to EHR acknowledgement")
        hist.add_metric([], buckets, total)
        yield hist
        for name, doc, labels, rows in self.gauges():
            family = GaugeMetricFamily(name, doc, labels=list(labels))
            for label_values, value in rows:
                family.add_metric(list(label_values), value)
            yield family
