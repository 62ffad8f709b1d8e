"""Retention against real Redis: bodies of finished events and closed dead letters go; open stay."""

from __future__ import annotations

import time

from core.config import Settings
from core.runtime import Runtime
from tests.support import config_text, fixture_bytes
from worker.retention import purge


def runtime(outbox, redis_url) -> Runtime:
    text = config_text(outbox) + "\n[retention]\nevent_body_days = 1\nclosed_dead_letter_days = 2\n"
    settings = Settings.from_toml(text, {"REDIS_URL": redis_url})
    return Runtime.build(settings, kick=lambda *a: None, reprocess=lambda *a: None)


def test_purge_removes_only_what_nobody_needs(outbox, redis_url, rclient):
    rt = runtime(outbox, redis_url)
    old = time.time() - 3 * 86400
    done_id, _ = rt.store.put(fixture_bytes("02_booking_created.json"), "BOOKING_CREATED",
                              received_at=old)
    rt.store.set_state(done_id, "done")
    fresh_id, _ = rt.store.put(fixture_bytes("04_booking_rescheduled.json"),
                               "BOOKING_RESCHEDULED")
    rt.store.set_state(fresh_id, "done")
    flight_id, _ = rt.store.put(fixture_bytes("05_booking_cancelled.json"), "BOOKING_CANCELLED",
                                received_at=old)  # still "received": in flight
    dead_id, _ = rt.store.put(fixture_bytes("03_booking_requested.json"), "BOOKING_REQUESTED",
                              received_at=old)
    rt.store.set_state(dead_id, "dead")
    open_dl = rt.deadletters.add(stage="ingest", error_code="x", error_class="X", error_text="",
                                 event_id=dead_id)
    closed = rt.deadletters.add(stage="delivery", error_code="ack_AE", error_class="X",
                                error_text="", delivery_id="ev_gone.files", wire=b"MSH|x")
    rt.deadletters.set_state(closed, "resolved", "tester", "fixed")
    rclient.hset(f"calehr:dl:{closed}", "updated_at", repr(old))

    result = purge(rt)
    assert result == {"event_bodies": 1, "dead_letters": 1}
    assert rt.store.get(done_id) is None or rclient.hget(f"calehr:event:{done_id}", "body") is None
    assert rclient.hget(f"calehr:event:{done_id}", "state") == b"done"  # the facts stay
    for kept in (fresh_id, flight_id, dead_id):
        assert rclient.hget(f"calehr:event:{kept}", "body") is not None
    assert rt.deadletters.get(closed) is None and rt.deadletters.get(open_dl) is not None
    # a late exact duplicate of the purged body is still recognised
    assert rt.store.put(fixture_bytes("02_booking_created.json"), "BOOKING_CREATED")[1] is True
    assert purge(rt) == {"event_bodies": 0, "dead_letters": 0}


def test_purge_drops_long_ended_bookings_from_the_conflict_index(outbox, redis_url, rclient):
    from tests.adapters.hl7v2.helpers import event_from

    rt = runtime(outbox, redis_url)
    provider = rt.settings.providers[0]
    ended = event_from("02_booking_created.json")  # 2026-10-14
    rt.conflicts.track(provider, ended)
    soon = event_from("04_booking_rescheduled.json", uid="LaterMoved", rescheduleUid="Later")
    rt.conflicts.track(provider, soon)
    index = f"calehr:calbookings:{provider.ehr_id}"
    assert rclient.hlen(index) == 2
    purge(rt, now=ended.end.timestamp() + 31 * 86400)  # 31 days after the first one ended
    assert sorted(rclient.hkeys(index)) == [b"Later"]
    assert rclient.zcard(index + ":ends") == 1


def test_purge_forgets_filler_ids_not_seen_for_longer_than_an_appointment_lives(
        outbox, redis_url, rclient):
    from core import clock
    from core.ehr_echo import TTL_SECONDS, EhrEchoLedger, Filler

    rt = runtime(outbox, redis_url)
    echoes = EhrEchoLedger(rclient)
    long_ago = clock.now() - TTL_SECONDS - 86400
    with clock.frozen_at(long_ago):
        echoes.record_filler("K-old", "files", Filler("E-1", "EHR"))
    echoes.record_filler("K-new", "files", Filler("E-2", "EHR"))
    purge(rt)
    assert rclient.hkeys("calehr:ehr-filler:files") == [b"E-2"]
    assert echoes.key_for_filler("files", "E-2") == "K-new"
