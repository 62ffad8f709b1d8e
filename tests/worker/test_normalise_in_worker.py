"""Fixtures sent byte-exact through gunicorn reach a real Celery worker, which normalises them."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import redis
from cryptography.fernet import Fernet

from tests.support import KEY, config_text, fixture_bytes, post_signed, wait_for


def normalised(r: redis.Redis, event_id: str) -> dict | None:
    token = r.hget(f"calehr:event:{event_id}", "normalised")
    return json.loads(Fernet(KEY).decrypt(token)) if token else None


def test_worker_turns_each_fixture_into_the_right_appointment_event(stack, outbox, rclient):
    # no routes: this test is about normalisation only, so nothing is delivered
    stack.write_config(config_text(outbox, routes=""))
    base = stack.web()
    stack.worker()
    ids = {}
    for name in ["02_booking_created.json", "03_booking_requested.json",
                 "04_booking_rescheduled.json", "05_booking_cancelled.json"]:
        resp = post_signed(base, fixture_bytes(name))
        assert resp.status_code == 202, resp.text
        ids[name] = resp.json()["event_id"]
    # nothing routed: each event is recorded as such, not dropped
    for i in ids.values():
        wait_for(lambda i=i: rclient.hget(f"calehr:event:{i}", "state") == b"unrouted", 30,
                 message="unrouted state")
    # read after acceptance: a cancel that came before its reschedule is keyed once it is known
    events = {name: normalised(rclient, i) for name, i in ids.items()}

    created = events["02_booking_created.json"]
    assert created["kind"] == "created"
    assert created["appointment_key"] == "7xQm2kVd9RbTn4FgHs1LpA"
    assert created["ical_uid"] == "7xQm2kVd9RbTn4FgHs1LpA@Cal.com"
    assert created["uid"] == "7xQm2kVd9RbTn4FgHs1LpA"
    assert created["sequence"] == 0
    assert datetime.fromisoformat(created["start"]) == datetime(2026, 10, 14, 15, 0, tzinfo=UTC)
    assert datetime.fromisoformat(created["end"]) == datetime(2026, 10, 14, 15, 30, tzinfo=UTC)
    assert created["organizer"]["username"] == "dr-okafor"
    assert created["organizer"]["timezone"] == "America/Chicago"
    assert created["attendee"]["last_name"] == "Reyes"
    assert created["attendee"]["phone"] == "+13125550147"
    assert created["responses"]["dateOfBirth"] == "1984-03-09"
    assert created["responses"]["insuranceMemberId"] == "XQJ-448-21907"
    assert created["location"].startswith("Lakeside Clinic")
    assert created["event_type_slug"] == "new-patient-consult"
    assert created["event_type_id"] == 1187

    requested = events["03_booking_requested.json"]
    assert requested["kind"] == "requested" and requested["status"] == "PENDING"
    assert requested["appointment_key"] == "Lk9vR2mXc4TqB7nYp1WdZe"

    moved = events["04_booking_rescheduled.json"]
    assert moved["kind"] == "rescheduled"
    assert moved["appointment_key"] == created["appointment_key"]
    assert moved["uid"] == "Q3pW8nZk1sYc5VdTe7HbMu"
    assert moved["previous_uid"] == "7xQm2kVd9RbTn4FgHs1LpA"
    assert moved["sequence"] == 1
    assert datetime.fromisoformat(moved["start"]) == datetime(2026, 10, 16, 19, 30, tzinfo=UTC)

    cancelled = events["05_booking_cancelled.json"]
    assert cancelled["kind"] == "cancelled"
    assert cancelled["sequence"] == 2
    assert cancelled["appointment_key"] == created["appointment_key"]
    assert datetime.fromisoformat(cancelled["end"]) == datetime(2026, 10, 16, 20, 0, tzinfo=UTC)
    assert "inpatient" in cancelled["cancellation_reason"]
