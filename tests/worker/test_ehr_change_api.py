"""Queued EHR-side changes against the local Cal.com API v2 fake: retried while Cal.com is down,
handed to staff when Cal.com refuses (real Redis, real HTTP)."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
import redis

from adapters.calcom.actions import BookingActions
from core import clock
from core.config import Settings
from core.crypto import Cipher
from core.ehr_echo import LATE_ECHO_SECONDS, fingerprint
from tests.support import config_text, fixture_bytes
from tests.worker.fake_calcom import API_KEY, FakeCalcom, api_booking
from tests.worker.helpers import dead_letters
from worker.ehr_changes import EhrChange, EhrReport, OwnAppointments


@pytest.fixture
def calcom():
    fake = FakeCalcom()
    yield fake
    fake.close()


def own(tmp_path, rclient, calcom: FakeCalcom) -> OwnAppointments:
    text = config_text(tmp_path / "outbox").replace(
        "[calcom]\n", f'[calcom]\napi_url = "{calcom.url}"\napi_key = "{API_KEY}"\n', 1)
    settings = Settings.from_toml(text, {})
    return OwnAppointments(settings, rclient, Cipher(settings.security.encryption_keys))


def queue(service: OwnAppointments, action: str, uid: str = "BK1") -> EhrChange:
    change = EhrChange(id=f"ehc_{action}", appointment_key="K1", target="ehr", action=action,
                       booking_uid=uid, origin="hl7:S15",
                       start="2031-03-04T09:00:00Z" if action == "reschedule" else "",
                       end="2031-03-04T09:30:00Z" if action == "reschedule" else "")
    service._save(change, reason="Doctor ill", email="jordan.reyes@example.com")
    service.r.zadd(service.pending_key, {change.id: time.time()})
    return change


def test_down_then_up_is_retried_and_applied_once(tmp_path, rclient, calcom):
    calcom.put(api_booking("BK1", "2031-03-01T09:00:00.000Z", "2031-03-01T09:30:00.000Z",
                           "2031-01-01T00:00:00.000Z"))
    service = own(tmp_path, rclient, calcom)
    change = queue(service, "no_show")
    calcom.fail_next = [503]
    assert service.run_pending() == 1
    assert service.get(change.id).state == "pending" and service.get(change.id).attempts == 1
    assert service.run_pending() == 0  # not due yet: backoff
    assert service.run_pending(now=time.time() + 3600) == 1
    assert service.get(change.id).state == "applied"
    posts = calcom.posts()
    assert [p["path"] for p in posts] == ["/v2/bookings/BK1/mark-absent"] * 2
    assert posts[-1]["body"] == {"attendees": [{"email": "jordan.reyes@example.com",
                                                "absent": True}]}
    assert calcom.bookings["BK1"]["attendees"][0]["absent"] is True
    assert rclient.zcard(service.pending_key) == 0 and dead_letters(rclient) == []


def test_a_refusal_is_handed_to_staff_with_what_to_do(tmp_path, rclient, calcom):
    service = own(tmp_path, rclient, calcom)  # BK1 is unknown to Cal.com: 404
    change = queue(service, "reschedule")
    service.run_pending()
    assert service.get(change.id).state == "action_needed"
    (dl,) = dead_letters(rclient)
    assert (dl["stage"], dl["error_code"]) == ("ehr_change", "calcom_api_failed")
    assert "reschedule booking BK1 to 2031-03-04T09:00:00Z" in dl["error_text"]
    assert "HTTP 404" in dl["error_text"]
    assert "Doctor ill" not in dl["error_text"] and "jordan" not in dl["error_text"]
    assert rclient.zcard(service.pending_key) == 0


# what the EHR reports, against the appointment the ledger knows ----------------------------------
T0 = (datetime.now(UTC) + timedelta(days=10)).replace(second=0, microsecond=0)
T1, T2 = T0 + timedelta(days=1), T0 + timedelta(days=2)
KEY = UID = "b8nxY3NhrSVA36YRNA8SpK"  # BOOKING_CREATED.json's uid: the appointment key


def _z(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def booked_at(service: OwnAppointments, start: datetime = T0) -> str:
    """The ledger knows the fixture's booking at `start` (30 minutes); returns its event id."""
    created = json.loads(fixture_bytes("BOOKING_CREATED.json"))
    created["payload"].update(startTime=_z(start), endTime=_z(start + timedelta(minutes=30)))
    event_id, _ = service.store.put(json.dumps(created).encode(), "BOOKING_CREATED")
    service.r.hset(service.ledger.appt(KEY), mapping={
        "last_event_id": event_id, "booking_event_id": event_id, "status": "created",
        "last_sequence": 0})
    return event_id


def report(event: str, start: datetime | None = None, **kw) -> EhrReport:
    end = start + timedelta(minutes=30) if start else None
    return EhrReport(event, start, end, origin=f"hl7:{event}", **kw)


def state_at(start: datetime) -> str:
    return fingerprint("S13", start, start + timedelta(minutes=30))


def test_a_move_back_to_a_time_we_sent_is_never_taken_for_an_echo(tmp_path, rclient, calcom):
    service = own(tmp_path, rclient, calcom)
    target = service.settings.target("files")
    assert target.ehr_echoes  # the default
    booked_at(service, T1)  # booked at T0, then the patient moved it to T1 in Cal.com
    service.echoes.sent(KEY, "files", state_at(T0))
    service.echoes.sent(KEY, "files", state_at(T1))
    # minutes later: a late echo of the first S12, or the clinic moving it back? A person decides
    assert service.handle(KEY, target, report("S13", T0)) == "own:action_needed"
    (dl,) = dead_letters(rclient)
    assert (dl["stage"], dl["error_code"]) == ("ehr_change", "ehr_change_unclear")
    assert f"reschedule booking {UID} to {T0.strftime('%Y-%m-%dT%H:%M:%SZ')}" in dl["error_text"]
    assert rclient.zcard(service.pending_key) == 0
    # long after we sent it: the clinic moved it back, and Cal.com follows
    service.echoes.sent(KEY, "files", state_at(T0))
    service.echoes.sent(KEY, "files", state_at(T1))
    with clock.frozen_at(clock.now() + LATE_ECHO_SECONDS + 60):
        assert service.handle(KEY, target, report("S13", T0)) == "own:reschedule_queued"
    # the current state, again: the echo
    service.echoes.sent(KEY, "files", state_at(T1))
    assert service.handle(KEY, target, report("S13", T1)) == "own:echo"


def test_an_ehr_no_show_after_cal_com_took_its_no_show_back_marks_the_booker(
        tmp_path, rclient, calcom):
    service = own(tmp_path, rclient, calcom)
    target = service.settings.target("files")
    booking_id = booked_at(service, T0)
    taken_back = json.loads(fixture_bytes("BOOKING_NO_SHOW_UPDATED.json"))
    taken_back["payload"]["bookingUid"] = UID
    taken_back["payload"]["attendees"][0]["noShow"] = False
    no_show_id, _ = service.store.put(json.dumps(taken_back).encode(), "BOOKING_NO_SHOW_UPDATED")
    rclient.hset(service.ledger.appt(KEY), mapping={
        "last_event_id": no_show_id, "booking_event_id": booking_id, "status": "no_show"})
    # we told the EHR "noshow" before; much later it reports one again after Cal.com's undo
    assert service.handle(KEY, target, report("S26")) == "own:no_show_queued"
    (change_id,) = [c.decode() for c in rclient.zrange(service.pending_key, 0, -1)]
    change, _, email = service._load(change_id)
    assert (change.booking_uid, email) == (UID, "j.oeztuerk-baecker@example.de")


def test_an_s14_with_other_times_than_cal_com_is_an_action_item(tmp_path, rclient, calcom):
    service = own(tmp_path, rclient, calcom)
    target = service.settings.target("files")
    booked_at(service, T0)
    service.echoes.sent(KEY, "files", state_at(T0))
    assert service.handle(KEY, target, report("S14", T0)) == "own:echo"
    assert service.handle(KEY, target, report("S14", T2)) == "own:action_needed"
    (dl,) = dead_letters(rclient)
    assert dl["error_code"] == "ehr_times_differ" and dl["message_event"] == "S14"
    assert service.handle(KEY, target, report("S14", T2)) == "own:echo"  # said once is enough


def test_move_then_cancel_in_the_ehr_cancels_the_new_booking_and_its_webhook_is_an_echo(
        tmp_path, rclient, calcom):
    service = own(tmp_path, rclient, calcom)
    target = service.settings.target("files")
    booked_at(service, T0)
    calcom.put(api_booking(UID, _z(T0), _z(T0 + timedelta(minutes=30)), _z(T0)))
    service.echoes.sent(KEY, "files", state_at(T0))
    # the clinic moves it, then cancels it, before Cal.com's RESCHEDULED webhook is back
    assert service.handle(KEY, target, report("S13", T1)) == "own:reschedule_queued"
    assert service.handle(KEY, target, report("S15")) == "own:cancel_queued"
    assert service.run_pending() == 2  # in order, one appointment change at a time
    assert service.run_pending() == 0
    (moved,) = [b for b in calcom.bookings.values() if b.get("rescheduledFromUid") == UID]
    assert [p["path"] for p in calcom.posts()] == [f"/v2/bookings/{UID}/reschedule",
                                                   f"/v2/bookings/{moved['uid']}/cancel"]
    assert moved["status"] == "cancelled" and dead_letters(rclient) == []
    assert service.ledger.resolve(moved["uid"]) == KEY  # known before its webhook comes
    # Cal.com's webhooks come back late: neither goes to the EHR (no S13 reinstates it)
    assert service.echoes.ehr_made(KEY, "files", state_at(T1), moved["uid"])
    assert service.echoes.ehr_made(KEY, "files", "cancelled", moved["uid"])
    # a later move by the patient in Cal.com (another booking uid) is news for the EHR
    assert not service.echoes.ehr_made(KEY, "files", state_at(T1), "patient-moved-uid")


def test_a_runner_with_a_stale_due_list_does_not_apply_a_change_again(tmp_path, rclient, calcom):
    calcom.put(api_booking("BK1", "2031-03-01T09:00:00.000Z", "2031-03-01T09:30:00.000Z",
                           "2031-01-01T00:00:00.000Z"))
    service = own(tmp_path, rclient, calcom)
    change = queue(service, "cancel")
    stale_due = rclient.zrangebyscore(service.pending_key, "-inf", "+inf")  # runner 2 reads
    assert service.run_pending() == 1  # runner 1 applies and releases the lock
    for raw in stale_due:  # runner 2 then gets the free lock
        service._apply(BookingActions(service.settings.calcom), raw.decode())
    assert [p["path"] for p in calcom.posts()] == ["/v2/bookings/BK1/cancel"]
    assert service.get(change.id).state == "applied" and dead_letters(rclient) == []


@pytest.mark.parametrize("action", ["cancel", "no_show", "reschedule"])
def test_a_timeout_on_a_change_cal_com_made_is_no_failure(tmp_path, rclient, calcom, action):
    calcom.put(api_booking("BK1", "2031-03-01T09:00:00.000Z", "2031-03-01T09:30:00.000Z",
                           "2031-01-01T00:00:00.000Z"))
    service = own(tmp_path, rclient, calcom)
    change = queue(service, action)
    answer = threading.Event()
    calcom.slow_next = [answer]
    try:  # Cal.com makes the change, its answer comes after our client gave up
        service._apply(BookingActions(service.settings.calcom, timeout=(2.0, 0.3)), change.id)
    finally:
        answer.set()
    assert service.get(change.id).state == "pending"
    assert service.run_pending(now=clock.now() + 3600) == 1
    assert service.get(change.id).state == "applied"
    assert len(calcom.posts()) == 1 and dead_letters(rclient) == []
    if action == "reschedule":  # the new booking is where the appointment's next change goes
        (moved,) = [b for b in calcom.bookings.values() if b.get("rescheduledFromUid") == "BK1"]
        assert service._latest_uid("K1", "BK1") == moved["uid"]


@pytest.mark.parametrize("action", ["cancel", "reschedule"])
def test_a_change_whose_record_after_the_post_is_lost_in_a_failover_is_not_posted_again(
        tmp_path, rclient, calcom, action):
    """A failover can keep what Redis had when the POST went out and lose what was written after
    it (applied, done; for a move the new uid may survive): the next runner asks Cal.com first."""
    calcom.put(api_booking("BK1", "2031-03-01T09:00:00.000Z", "2031-03-01T09:30:00.000Z",
                           "2031-01-01T00:00:00.000Z"))
    service = own(tmp_path, rclient, calcom)
    change = queue(service, action)
    record = service._change_key(change.id)
    at_post: dict[str, bytes] = {}
    act = calcom.act

    def snapshot_then_act(*args):  # what a replica holds when Cal.com gets the POST
        at_post["change"] = rclient.hget(record, "change")
        return act(*args)

    calcom.act = snapshot_then_act
    assert service.run_pending() == 1 and service.get(change.id).state == "applied"
    # the promoted replica: the change as it was at the POST, due again
    rclient.hset(record, "change", at_post["change"])
    rclient.zadd(service.pending_key, {change.id: time.time()})
    assert service.run_pending(now=clock.now() + 3600) == 1
    assert service.get(change.id).state == "applied"
    assert len(calcom.posts()) == 1 and dead_letters(rclient) == []
    if action == "reschedule":
        (moved,) = [b for b in calcom.bookings.values() if b.get("rescheduledFromUid") == "BK1"]
        assert service._latest_uid("K1", "BK1") == moved["uid"]


def test_a_lock_a_failover_kept_from_release_is_released_on_the_next_run(
        tmp_path, rclient, calcom, monkeypatch):
    """Redis went away as a change ended: its appointment lock (120 s) must not hold the
    appointment's next change back until it expires."""
    from redis.lock import Lock

    calcom.put(api_booking("BK1", "2031-03-01T09:00:00.000Z", "2031-03-01T09:30:00.000Z",
                           "2031-01-01T00:00:00.000Z"))
    service = own(tmp_path, rclient, calcom)
    first = queue(service, "no_show")
    release = Lock.do_release

    def connection_lost(self, token):  # noqa: ANN001, ANN202
        raise redis.ConnectionError("the master went away")

    monkeypatch.setattr(Lock, "do_release", connection_lost)
    assert service.run_pending() == 1 and service.get(first.id).state == "applied"
    assert rclient.keys("calehr:lock:ehr-change-appt:*")  # still held
    monkeypatch.setattr(Lock, "do_release", release)
    second = queue(service, "cancel")
    assert service.run_pending() == 1  # released first, so the next change goes at once
    assert service.get(second.id).state == "applied"
    assert [p["path"].rsplit("/", 1)[1] for p in calcom.posts()] == ["mark-absent", "cancel"]
