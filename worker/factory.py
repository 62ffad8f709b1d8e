"""make_celery(settings): the Celery app, built from the same Settings as everything else."""

from __future__ import annotations

from celery import Celery

from core.config import Settings
from core.interfaces import TASK_QUEUE as QUEUE
from core.redis_client import RedisNotConfigured
from core.redis_url import kombu_broker


def make_celery(settings: Settings, *, with_tasks: bool = False) -> Celery:
    if not settings.redis_url:
        raise RedisNotConfigured()
    w = settings.worker
    broker, sentinel_options, tls = kombu_broker(settings.redis_url)  # sentinel: master_name, ...
    app = Celery("calehr", broker=broker, set_as_current=with_tasks)
    transport = {"visibility_timeout": w.visibility_timeout, "socket_timeout": 10,
                 "socket_connect_timeout": 5, **sentinel_options}
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        result_backend=None,
        task_always_eager=False,
        task_soft_time_limit=w.task_soft_time_limit,
        task_time_limit=w.task_time_limit,
        broker_transport_options=transport,
        visibility_timeout=w.visibility_timeout,
        broker_connection_retry_on_startup=True,
        task_default_queue=QUEUE,
        worker_hijack_root_logger=False,
        worker_soft_shutdown_timeout=10.0,
        worker_enable_soft_shutdown_on_idle=True,
        broker_pool_limit=10,
        beat_schedule=_beat_schedule(settings),
        beat_scheduler="worker.beat_leader:LeaderScheduler",  # one beat across hosts
        calehr_settings=settings,  # for that scheduler: the settings read once at start
    )
    if tls:  # sentinels://: the master over TLS too, certificates checked (kombu's broker_use_ssl)
        import ssl

        app.conf.broker_use_ssl = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    from worker.broker import transport_for

    if transport := transport_for(broker):  # survives a Redis restart (see there)
        app.conf.broker_transport = transport
    if with_tasks:
        from worker.tasks import register

        register(app, settings)
    return app


def _beat_schedule(settings: Settings) -> dict:
    schedule = {"tick": {"task": "calehr.tick",
                         "schedule": max(0.5, settings.delivery.sweep_interval_seconds)}}
    if settings.calcom.reconcile_interval_seconds > 0 and settings.calcom.api_key:
        schedule["reconcile"] = {"task": "calehr.reconcile",
                                 "schedule": float(settings.calcom.reconcile_interval_seconds)}
    return schedule
