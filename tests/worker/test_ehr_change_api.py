"""Queued EHR-side changes against the local Cal.com API v2 fake: retried while Cal.com is down,
handed to staff when Cal.com refuses (real Redis, real HTTP)."""

from __future__ import annotations

import time

import pytest

from core.config import Settings
from core.crypto import Cipher
from tests.support import config_text
from tests.worker.fake_calcom import API_KEY, FakeCalcom, api_booking
from tests.worker.helpers import dead_letters
from worker.ehr_changes import EhrChange, OwnAppointments


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
