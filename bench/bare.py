"""The bare pipeline: Flask + Celery + build_siu + MLLP as a team would hand-roll it, with none of
the bridge's guarantees: no ledger, no encryption at rest, no dedupe, no ordering, no dead
letters; the whole body travels in the Celery message and Celery's defaults stay (ack on
receipt, prefetch 4). Same signature check, same mapping, same kept MLLP connection and the
same Redis (AOF `always`) as the bridge, so `python -m bench` can quote our rate against it.

    gunicorn bench.bare:web                       celery -A bench.bare:celery_app worker -Q bare
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from celery import Celery
from flask import Flask, jsonify, request

from adapters.calcom.payload import normalise, parse_body
from adapters.hl7v2 import MLLPClient, SiuProfile, build_siu
from core.config import Settings
from core.deliveries import control_id_for
from core.errors import PayloadError
from webhooks.signing import verify

TARGET = "ehr"
QUEUE = "bare"
settings = Settings.load()
celery_app = Celery("bare", broker=settings.redis_url)
celery_app.conf.update(task_default_queue=QUEUE, task_ignore_result=True,
                       worker_hijack_root_logger=False)
web = Flask(__name__)
_mllp: MLLPClient | None = None  # one kept connection per worker process


@web.post("/webhooks/calcom")
def receive():
    raw = request.get_data()
    if not verify(raw, request.headers.get("X-Cal-Signature-256"), settings.calcom.webhook_secrets):
        return jsonify(error="invalid_signature"), 401
    try:
        parse_body(raw)
    except PayloadError as exc:
        return jsonify(error=str(exc)), exc.status
    event_id = "ev_" + uuid.uuid4().hex[:20]
    celery_app.send_task("bare.deliver", args=[event_id, raw.decode()])
    return jsonify(event_id=event_id), 202


@web.get("/healthz")
def healthz():
    return jsonify(status="ok")


@celery_app.task(name="bare.deliver")
def deliver(event_id: str, body: str) -> str:
    global _mllp
    target = settings.target(TARGET)
    if _mllp is None:
        _mllp = MLLPClient(target)
    event = normalise(event_id, parse_body(body.encode()))
    control_id = control_id_for(f"{event_id}.{TARGET}")
    wire = build_siu(event, _profile(), message_event="S12", control_id=control_id,
                     message_time=datetime.now(UTC))
    result = _mllp.send(wire, control_id)
    if not result.ok:  # what a hand-rolled pipeline does: try again later, maybe twice
        raise deliver.retry(countdown=1, max_retries=3)
    return "ok"


_profiles: dict[str, SiuProfile] = {}


def _profile() -> SiuProfile:
    if TARGET not in _profiles:
        _profiles[TARGET] = SiuProfile.from_settings(settings, TARGET)
    return _profiles[TARGET]
