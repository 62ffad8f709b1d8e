"""GET /calendars/<provider>.ics?token=…: a provider's busy blocks for Cal.com's ICS-feed app.

Opaque "Busy" events only: a stable UID, start and end in UTC, nothing about the patient.
The rendered feed is cached in Redis per provider and block-store version, so a request is
two Redis reads unless a block changed. While Redis is unreachable each web process serves the
last feed it served (the feed must stay up: Cal.com treats a failed fetch as "free").
Unknown provider or wrong token: 404, the same answer.
"""

from __future__ import annotations

import hmac
import logging
from datetime import UTC, datetime

import redis
from flask import Blueprint, Response, abort, request
from icalendar import Calendar, Event

from core import clock
from core.blocks import Block, BusyBlockStore
from core.config import ProviderSettings
from webhooks.context import BridgeContext, bridge

log = logging.getLogger(__name__)
bp = Blueprint("ics", __name__)
PAST_SECONDS = 7 * 86400  # how far back the feed reaches
CACHE_CONTROL = "private, max-age=15"
_LAST_SERVED: dict[str, tuple[str, bytes]] = {}  # per web process: served while Redis is down


def _provider(name: str) -> ProviderSettings | None:
    for p in bridge().settings.providers:
        if name in (p.calcom_user, p.ehr_id):
            return p
    return None


def render(blocks: list[Block]) -> bytes:
    cal = Calendar()
    cal.add("prodid", "-//calehr//EHR busy times//EN")
    cal.add("version", "2.0")
    cal.add("calscale", "GREGORIAN")
    cal.add("x-wr-calname", "EHR busy times")
    for b in blocks:
        ev = Event()
        ev.add("uid", b.uid)
        ev.add("dtstamp", datetime.fromtimestamp(b.updated_at, UTC).replace(microsecond=0))
        ev.add("dtstart", b.start.astimezone(UTC))
        ev.add("dtend", b.end.astimezone(UTC))
        ev.add("summary", "Busy")
        ev.add("transp", "OPAQUE")
        ev.add("class", "PRIVATE")
        ev.add("sequence", b.sequence)
        cal.add_component(ev)
    return cal.to_ical()


def _current(ctx: BridgeContext, provider: ProviderSettings) -> tuple[str, bytes]:
    """(version, feed body): from the Redis cache, rendered again only after a change."""
    store = BusyBlockStore(ctx.redis, ctx.settings.key_prefix)
    cache_key = f"{ctx.settings.key_prefix}:ics-cache:{provider.ehr_id}"
    version = str(store.version(provider.ehr_id))
    cached_version, body = ctx.redis.hmget(cache_key, "version", "body")
    if cached_version is None or cached_version.decode() != version or body is None:
        body = render(store.list(provider.ehr_id, ending_after=clock.now() - PAST_SECONDS))
        pipe = ctx.redis.pipeline()
        pipe.hset(cache_key, mapping={"version": version, "body": body})
        pipe.expire(cache_key, 3600)
        pipe.execute()
    return version, body


@bp.get("/calendars/<provider>.ics")
def feed(provider: str) -> Response:
    ctx = bridge()
    p = _provider(provider)
    token = request.args.get("token", "")
    if p is None or not p.ics_token or not hmac.compare_digest(
            token.encode(), p.ics_token.encode()):
        abort(404)
    memory_key = f"{ctx.settings.key_prefix}:{p.ehr_id}"
    try:
        version, body = _current(ctx, p)
        _LAST_SERVED[memory_key] = (version, body)
    except redis.RedisError as exc:
        if memory_key not in _LAST_SERVED:
            log.error("ICS feed: Redis unavailable and no copy yet: %s", exc.__class__.__name__)
            return Response(b"busy times are unavailable, try again shortly\n", status=503,
                            mimetype="text/plain", headers={"Retry-After": "5"})
        log.warning("ICS feed served from this process's last copy: %s", exc.__class__.__name__)
        version, body = _LAST_SERVED[memory_key]
    etag = f'"{p.ehr_id}-{version}"'
    if request.if_none_match.contains(etag.strip('"')):
        return Response(status=304, headers={"ETag": etag, "Cache-Control": CACHE_CONTROL})
    return Response(body, mimetype="text/calendar",
                    headers={"Cache-Control": CACHE_CONTROL, "ETag": etag,
                             "Content-Disposition": "inline; filename=busy.ics"})
