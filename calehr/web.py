"""The Flask app factory: every blueprint (Cal.com receiver, health, metrics, ICS feed, FHIR
inbound, console) wired to its concrete services."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from flask import Flask, jsonify

from calehr.wiring import ehr_services
from core.config import Settings
from core.crypto import Cipher
from core.metrics import Metrics
from core.redis_client import make_redis
from core.spool import IngestSpool
from core.store import EventStore
from webhooks.context import BridgeContext


def create_app(settings: Settings | None = None, *,
               enqueue: Callable[[str], None] | None = None,
               run_dispatcher: bool = True) -> Flask:
    """`run_dispatcher=False`: new ids wait in the dispatch list (tests read it there)."""
    settings = settings or Settings.load()
    app = Flask(__name__)
    client = make_redis(settings)
    dispatch = enqueue is None  # an injected enqueue (tests) is called on the request path
    if enqueue is None:
        from calehr.queue import make_enqueue

        enqueue = make_enqueue(settings)
    cipher = Cipher(settings.security.encryption_keys)
    spool = None
    if settings.spool.enabled:
        folder = Path(settings.spool.path or Path(settings.var_dir) / "spool")
        spool = IngestSpool(folder, cipher, settings.spool.max_bytes)
    ctx = BridgeContext(settings=settings, redis=client,
                        store=EventStore(client, cipher, settings.key_prefix),
                        enqueue=enqueue, metrics=Metrics(client, settings.key_prefix),
                        spool=spool, ehr_services=ehr_services, dispatch=dispatch)
    app.extensions["calehr"] = ctx
    if dispatch and run_dispatcher:
        from calehr.queue import make_send_batch
        from webhooks.dispatch import start_dispatcher

        app.extensions["calehr-dispatch-stop"] = start_dispatcher(ctx.store,
                                                                  make_send_batch(settings))
    if spool is not None:
        from webhooks.spool_drain import start_drainer

        app.extensions["calehr-spool-stop"] = start_drainer(ctx, settings.spool.drain_interval_seconds)

    from webhooks import calcom, health, metrics

    app.register_blueprint(health.bp)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(calcom.bp)
    from webhooks import fhir_inbound, ics

    app.register_blueprint(ics.bp)
    app.register_blueprint(fhir_inbound.bp)
    if settings.console.secret_key:
        from calehr.producer import make_client_runtime
        from deadletter.console import register_console

        register_console(app, settings, make_client_runtime)

    @app.errorhandler(404)
    def not_found(_exc):
        return jsonify(error="not_found", detail="no such route"), 404

    @app.errorhandler(405)
    def not_allowed(_exc):
        return jsonify(error="method_not_allowed", detail="method not allowed here"), 405

    return app
