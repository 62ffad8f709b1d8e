"""A worker survives Redis restarts while tasks are in flight (worker/broker.py: without it,
kombu's restore of unacknowledged messages raised AttributeError 'hostname' and the worker
exited, here within two to four restarts)."""

from __future__ import annotations

import random
import threading
import time

import pytest

from core.embedded_redis import EmbeddedRedis
from tests.support import config_text, wait_for
from worker.broker import transport_for
from worker.factory import make_celery

pytestmark = pytest.mark.slow


def test_worker_survives_redis_restarts_with_tasks_in_flight(tmp_path, stack, outbox):
    own = EmbeddedRedis(tmp_path / "own-redis")
    own.start()
    stop = threading.Event()
    try:
        stack.redis_url = own.url
        stack.write_config(config_text(outbox))
        worker = stack.worker()
        app = make_celery(stack.settings())
        assert app.conf.broker_transport == "worker.broker:Transport"

        def feed() -> None:  # tasks keep arriving, so some are unacknowledged at each restart
            while not stop.is_set():
                try:
                    app.send_task("calehr.process_event", args=["ev_not_there"])
                except Exception:  # noqa: BLE001 - Redis is down for a moment
                    stop.wait(0.2)
                stop.wait(0.005)

        threading.Thread(target=feed, daemon=True).start()
        rng = random.Random(4)
        for restart in range(8):
            wait_for(lambda: worker.output().count("succeeded") > 0, 30, message="tasks flowing")
            time.sleep(rng.uniform(0.2, 1.0))  # let tasks be in flight: not a synchronisation
            own.stop()
            own.start()
            mark = worker.output().count("succeeded")
            wait_for(lambda m=mark: worker.output().count("succeeded") > m
                     or worker.proc.poll() is not None, 60, 0.1, "tasks after the restart")
            assert worker.proc.poll() is None, f"worker exited after restart {restart + 1}"
        assert "Restoring" in worker.output()  # the path that used to crash did run
        assert "'hostname'" not in worker.output()
    finally:
        stop.set()
        stack.stop()
        own.stop()


def test_only_redis_and_sentinel_urls_get_the_patched_transport():
    assert transport_for("redis://127.0.0.1:6379/0") == "worker.broker:Transport"
    assert transport_for("sentinel://127.0.0.1:26379") == "worker.broker:SentinelTransport"
    assert transport_for("rediss://example:6380/0") is None
