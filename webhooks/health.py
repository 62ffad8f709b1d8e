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
    """503 only when a webhook would be refused; Redis down with room in the spool is degraded."""
    ctx = bridge()
    spool = None
    if ctx.spool is not None:
        used = ctx.spool.size()
        spool = {"bytes": used, "max_bytes": ctx.spool.max_bytes, "full": ctx.spool.full}
    try:
        ctx.redis.ping()
    except redis.RedisError as exc:
        if spool and not spool["full"]:
            return jsonify(status="degraded", redis="unreachable", spool=spool,
                           error=exc.__class__.__name__)
        return jsonify(status="unavailable", redis="unreachable", spool=spool,
                       error=exc.__class__.__name__), 503
    status = "ready" if not spool or not spool["bytes"] else "draining"
    return jsonify(status=status, redis="ok", spool=spool)
