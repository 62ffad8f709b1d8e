"""Recurring series: Cal.com sends ONE BOOKING_CANCELLED for "this and following", without
`recurringEventId`; the bridge asks Cal.com API v2 (a local fake that answers as the API documents)
for the series and cancels every occurrence Cal.com cancelled, once each."""

from __future__ import annotations

import pytest

from adapters.calcom.bookings import BookingsClient
from core.runtime import Runtime
from tests.factories import praxis_nord, with_changes
from tests.support import config_text, fixture_bytes, post_signed, wait_for
from tests.worker.fake_calcom import API_KEY, FakeCalcom, api_booking
from tests.worker.test_real_bodies import FINAL, by_placer, state, story
from worker.series import follow

pytestmark = pytest.mark.slow

SERIES = "8a9c805b-60fa-4031-9eef-728ae72ceceb"  # recurringEventId, as MEETING_* bodies show it
OCCURRENCES = [("1upp3pkN6WhoXWqo7n6BNG", "2026-12-15"), ("ebYnZzxi2uEzsMxs2PYnmL", "2026-12-22"),
               ("svmwxXj49DMQycvATLDHbn", "2026-12-29")]
CREATED = [f"BOOKING_CREATED--recurring-{i}.json" for i in (1, 2, 3)]
CANCEL = "BOOKING_CANCELLED--series-following.json"


@pytest.fixture
def calcom():
    server = FakeCalcom()
    yield server
    server.close()


def put_series(calcom: FakeCalcom, cancelled_from: int) -> None:
    """The series as Cal.com holds it after "this and following" from occurrence `cancelled_from`."""
    for n, (uid, day) in enumerate(OCCURRENCES, start=1):
        b = api_booking(uid, f"{day}T10:00:00.000Z", f"{day}T10:45:00.000Z",
                        "2026-11-29T22:26:56.000Z",
                        status="cancelled" if n >= cancelled_from else "accepted")
        b.update(recurringBookingUid=SERIES, eventTypeId=1195,
                 eventType={"id": 1195, "slug": "physio-serie"},
                 location="Praxis Nord, Königstraße 12, 70173 Stuttgart",
                 hosts=[{"id": 42, "name": "Dr. Helga Weiß", "username": "dr-weiss",
                         "email": "helga.weiss@praxis-nord.example",
                         "timeZone": "Europe/Berlin"}])
        calcom.put(b)


def start(stack, tmp_path, calcom: FakeCalcom, rclient, beat: bool = False):
    folder = tmp_path / "praxis"
    folder.mkdir()
    text = config_text(tmp_path / "outbox", extra_targets=praxis_nord(folder),
                       routes='[[routes]]\ntargets = ["praxis"]\n')
    stack.write_config(text.replace(
        "[calcom]\n", f'[calcom]\napi_url = "{calcom.url}"\napi_key = "{API_KEY}"\n', 1))
    base = stack.web()
    stack.worker()
    if beat:
        stack.beat()
    for name in CREATED:
        event_id = post_signed(base, fixture_bytes(name)).json()["event_id"]
        wait_for(lambda i=event_id: state(rclient, i) in FINAL, 30, message=name)
    return base, folder


def sent(folder) -> dict[str, list[tuple[str, str]]]:
    return {k: [story(m) for m in v] for k, v in by_placer(folder).items()}


def test_this_and_following_cancels_each_later_occurrence_once(stack, tmp_path, calcom,
                                                                rclient):
    base, folder = start(stack, tmp_path, calcom, rclient)
    put_series(calcom, cancelled_from=2)
    cancel_id = post_signed(base, fixture_bytes(CANCEL)).json()["event_id"]
    wait_for(lambda: sent(folder).get(OCCURRENCES[2][0], [])[-1:] == [("S15", "Cancelled")], 30,
             message="the S15 for occurrence 3, which no webhook named")
    assert state(rclient, cancel_id) in FINAL
    asked = [r["path"] for r in calcom.requests]
    assert asked == [f"/v2/bookings/{OCCURRENCES[1][0]}", f"/v2/bookings/{SERIES}"]

    # Cal.com (or a resend) cancels occurrence 3 by webhook too: the EHR hears it once
    late = with_changes(fixture_bytes(CANCEL), uid=OCCURRENCES[2][0], bookingId=90207,
                        iCalUID=f"{OCCURRENCES[2][0]}@Cal.diy", rootBookingUid=OCCURRENCES[2][0],
                        startTime="2026-12-29T10:00:00+00:00", endTime="2026-12-29T10:45:00+00:00")
    late_id = post_signed(base, late).json()["event_id"]
    wait_for(lambda: state(rclient, late_id) in FINAL, 30, message="the late cancel")
    assert rclient.hget(f"calehr:event:{late_id}", "reason") == b"stale:booking already cancelled"
    # a second run of the follow-up (a retry after a crash) feeds nothing new
    rt = Runtime.build(stack.settings(), kick=lambda *a: None, reprocess=lambda *a: None)
    assert follow(rt, cancel_id, BookingsClient(rt.settings.calcom)) == {"occurrences": 3,
                                                                          "fed": 0}
    got = sent(folder)
    assert got[OCCURRENCES[0][0]] == [("S12", "Booked")]  # before the one clicked: untouched
    assert got[OCCURRENCES[1][0]] == [("S12", "Booked"), ("S15", "Cancelled")]
    assert got[OCCURRENCES[2][0]] == [("S12", "Booked"), ("S15", "Cancelled")]


def test_series_follow_up_waits_out_a_rate_limit_and_then_cancels(stack, tmp_path, calcom,
                                                                  rclient):
    base, folder = start(stack, tmp_path, calcom, rclient, beat=True)
    put_series(calcom, cancelled_from=2)
    calcom.rate_limit_next = 1  # the first call answers 429 Retry-After: 2
    post_signed(base, fixture_bytes(CANCEL))
    wait_for(lambda: sent(folder).get(OCCURRENCES[2][0], [])[-1:] == [("S15", "Cancelled")], 45,
             message="the S15 for occurrence 3 after the retry")
    assert sent(folder)[OCCURRENCES[0][0]] == [("S12", "Booked")]
    assert rclient.hlen("calehr:series-attempts") == 0
    assert [r["path"] for r in calcom.requests].count(f"/v2/bookings/{OCCURRENCES[1][0]}") == 2


def test_a_cancel_naming_its_series_asks_for_the_series_only(tmp_path, calcom, redis_url):
    """In process, real Redis: with `recurringEventId` in the body the first lookup is skipped."""
    from core.config import Settings
    from worker.pipeline import process_event

    folder = tmp_path / "praxis"
    text = config_text(tmp_path / "outbox", extra_targets=praxis_nord(folder),
                       routes='[[routes]]\ntargets = ["praxis"]\n').replace(
        "[calcom]\n", f'[calcom]\napi_url = "{calcom.url}"\napi_key = "{API_KEY}"\n', 1)
    fed: list[str] = []
    rt = Runtime.build(Settings.from_toml(text, {"REDIS_URL": redis_url}),
                       kick=lambda *a: None, reprocess=lambda event_id, force: fed.append(event_id))
    for name in CREATED:
        assert process_event(rt, rt.store.put(fixture_bytes(name), "BOOKING_CREATED")[0]) == "accepted"
    put_series(calcom, cancelled_from=2)
    cancel = with_changes(fixture_bytes(CANCEL), recurringEventId=SERIES)
    assert process_event(rt, rt.store.put(cancel, "BOOKING_CANCELLED")[0]) == "accepted"
    assert [r["path"] for r in calcom.requests] == [f"/v2/bookings/{SERIES}"]
    assert len(fed) == 1 and process_event(rt, fed[0]) == "accepted"
    assert sent(folder)[OCCURRENCES[2][0]] == [("S12", "Booked"), ("S15", "Cancelled")]
