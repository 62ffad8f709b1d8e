"""GET /calendars/<provider>.ics through the real web process (gunicorn), blocks in real Redis."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import redis
import requests
from icalendar import Calendar

from core.blocks import BusyBlockStore, block_uid
from core.embedded_redis import EmbeddedRedis
from tests.adapters.hl7v2.listener import ICS_TOKEN, busy_events, feed
from tests.support import config_text

pytestmark = pytest.mark.slow
SECOND_PROVIDER = """
[[providers]]
calcom_user = "dr-no-feed"
ehr_id = "NOFEED01"
name = "Feed^No"
"""
# a month ahead of whatever today is: the feed drops blocks that ended over a week ago
START = (datetime.now(UTC) + timedelta(days=30)).replace(hour=14, minute=0, second=0, microsecond=0)


@pytest.fixture
def web(stack, outbox):
    stack.write_config(config_text(outbox, extra_targets=SECOND_PROVIDER))
    return stack.web()


def test_feed_is_valid_icalendar_with_opaque_busy_events(web, rclient):
    store = BusyBlockStore(rclient)
    uid = block_uid("HOSPITAL", "A-1")
    store.upsert("OKAFOR01", uid, START, START + timedelta(minutes=30), "hl7")
    store.upsert("OKAFOR01", block_uid("HOSPITAL", "A-2"), START + timedelta(hours=2),
                 START + timedelta(hours=3), "fhir")

    resp = feed(web)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "text/calendar; charset=utf-8"
    assert "max-age=15" in resp.headers["Cache-Control"]
    assert feed(web, "OKAFOR01").content == resp.content  # by ehr_id as well
    cal = Calendar.from_ical(resp.content)
    assert str(cal["VERSION"]) == "2.0" and "calehr" in str(cal["PRODID"])
    events = cal.walk("VEVENT")
    assert len(events) == 2
    first = events[0]
    assert str(first["UID"]) == uid
    assert first.decoded("DTSTART") == START
    assert first.decoded("DTEND") == START + timedelta(minutes=30)
    assert str(first["SUMMARY"]) == "Busy" and str(first["TRANSP"]) == "OPAQUE"
    assert "DTSTAMP" in first
    assert f"DTSTART:{START:%Y%m%dT%H%M%SZ}" in resp.text  # UTC, not a local zone
    assert set(first.keys()) <= {"UID", "DTSTAMP", "DTSTART", "DTEND", "SUMMARY", "TRANSP",
                                 "CLASS", "SEQUENCE"}


def test_wrong_token_unknown_provider_and_feedless_provider_are_404(web):
    assert feed(web, token="tok-wrong").status_code == 404
    assert feed(web, token="").status_code == 404
    assert requests.get(f"{web}/calendars/dr-okafor.ics", timeout=10).status_code == 404
    assert feed(web, provider="dr-nobody").status_code == 404
    assert feed(web, provider="dr-no-feed", token="").status_code == 404
    assert feed(web, provider="NOFEED01", token=ICS_TOKEN).status_code == 404
    # the same body either way: nothing tells which providers exist
    assert feed(web, token="tok-wrong").content == feed(web, provider="dr-nobody").content


def test_a_move_keeps_the_uid_and_raises_the_sequence_a_release_removes_it(web, rclient):
    store = BusyBlockStore(rclient)
    uid = block_uid("HOSPITAL", "MOVE-1")
    store.upsert("OKAFOR01", uid, START, START + timedelta(minutes=30), "hl7")
    assert busy_events(web)[uid]["sequence"] == 0
    store.upsert("OKAFOR01", uid, START + timedelta(days=1), START + timedelta(days=1, hours=1),
                 "hl7")
    moved = busy_events(web)[uid]
    assert moved["start"] == START + timedelta(days=1) and moved["sequence"] == 1
    store.release(uid)
    assert busy_events(web) == {}


def test_etag_answers_304_until_a_block_changes(web, rclient):
    store = BusyBlockStore(rclient)
    store.upsert("OKAFOR01", block_uid("H", "E-1"), START, START + timedelta(hours=1), "hl7")
    first = feed(web)
    etag = first.headers["ETag"]
    again = requests.get(f"{web}/calendars/dr-okafor.ics", params={"token": ICS_TOKEN},
                         headers={"If-None-Match": etag}, timeout=10)
    assert again.status_code == 304
    store.upsert("OKAFOR01", block_uid("H", "E-2"), START, START + timedelta(hours=1), "hl7")
    changed = requests.get(f"{web}/calendars/dr-okafor.ics", params={"token": ICS_TOKEN},
                           headers={"If-None-Match": etag}, timeout=10)
    assert changed.status_code == 200 and changed.headers["ETag"] != etag


def test_long_past_blocks_are_left_out(web, rclient):
    store = BusyBlockStore(rclient)
    past = datetime.now(UTC).replace(microsecond=0) - timedelta(days=10)
    store.upsert("OKAFOR01", block_uid("H", "OLD"), past, past + timedelta(hours=1), "hl7")
    store.upsert("OKAFOR01", block_uid("H", "NEW"), START, START + timedelta(hours=1), "hl7")
    assert list(busy_events(web)) == [block_uid("H", "NEW")]


def test_feed_with_many_blocks_is_rendered_once_then_served_from_the_cache(web, rclient):
    store = BusyBlockStore(rclient)
    for i in range(500):
        begin = START + timedelta(minutes=30 * i)
        store.upsert("OKAFOR01", block_uid("H", f"MANY-{i}"), begin, begin + timedelta(minutes=30),
                     "hl7")
    first = feed(web)
    assert len(Calendar.from_ical(first.content).walk("VEVENT")) == 500
    cached = rclient.hget("calehr:ics-cache:OKAFOR01", "body")
    assert cached == first.content  # rendered once into Redis (speed is measured in bench/)
    rclient.hset("calehr:ics-cache:OKAFOR01", "body", cached + b"\r\n")  # marks the cached copy
    session = requests.Session()
    for _ in range(20):
        resp = session.get(f"{web}/calendars/dr-okafor.ics", params={"token": ICS_TOKEN},
                           timeout=10)
        assert resp.status_code == 200 and resp.content == cached + b"\r\n"  # not re-rendered


def test_feed_stays_up_while_redis_is_down(tmp_path, stack, outbox):
    own = EmbeddedRedis(tmp_path / "own-redis")
    own.start()
    try:
        stack.redis_url = own.url
        stack.write_config(config_text(outbox))
        base = stack.web(workers=1)  # one process: it keeps the copy it served last
        client = redis.Redis.from_url(own.url)
        BusyBlockStore(client).upsert("OKAFOR01", block_uid("H", "DOWN-1"), START,
                                      START + timedelta(hours=1), "hl7")
        client.close()
        before = feed(base)
        assert before.status_code == 200
        own.stop()
        during = feed(base)
        assert during.status_code == 200 and during.content == before.content
        assert feed(base, token="tok-wrong").status_code == 404
    finally:
        own.stop()
