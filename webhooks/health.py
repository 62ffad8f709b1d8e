from __future__ import annotations

import redis
from flask import Blueprint, jsonify

from webhooks.context import bridge

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    try:
        bridge().redis.ping()
    except redis.RedisError as exc:
        return jsonify(status="unavailable", redis="unreachable",
                       error=exc.__class__.__name__), 503
    return jsonify(status="ready", redis="ok")
