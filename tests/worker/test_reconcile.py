"""Reconciliation against a fake Cal.com API: a change that sent no webhook reaches the EHR once."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import hl7
import pytest

from tests.factories import CREATED_UID, MOVED_UID
from tests.support import ROOT, config_text, fixture_bytes, post_signed, wait_for
from tests.worker.fake_calcom import API_KEY, FakeCalcom, api_booking

pytestmark = pytest.mark.slow


@pytest.fixture
def calcom():
    server = FakeCalcom()
    yield server
    server.close()


def api_time(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def outbox_events(outbox) -> list[tuple[str, str, str]]:
    out = []
    for path in sorted(outbox.glob("*.hl7")):
        msg = hl7.parse(path.read_bytes().decode())
        out.append((str(msg["MSH.F9.R1.C2"]), str(msg["SCH.F1.R1.C1"]), str(msg["TQ1.F7"])))
    return out


def reconcile(stack) -> dict:
    run = subprocess.run([sys.executable, "-m", "calehr.cli", "reconcile"], env=stack.env, cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    return json.loads(run.stdout) if run.stdout.strip() else {"stderr": run.stderr}


def test_missed_reschedule_and_missed_booking_are_delivered_once(stack, outbox, calcom, rclient):
    text = config_text(outbox).replace(
        "[calcom]\n", f'[calcom]\napi_url = "{calcom.url}"\napi_key = "{API_KEY}"\n', 1)
    stack.write_config(text)
    base = stack.web()
    stack.worker()
    post_signed(base, fixture_bytes("02_booking_created.json"))
    wait_for(lambda: outbox_events(outbox), 30, message="the S12 from the webhook")

    created, moved = CREATED_UID.decode(), MOVED_UID.decode()
    # Cal.com changed them minutes ago: within the first run's look-back, whatever today is
    updated = [api_time(datetime.now(UTC) - timedelta(minutes=m)) for m in (61, 60, 55)]
    old_half = api_booking(created, "2026-10-14T15:00:00.000Z", "2026-10-14T15:30:00.000Z",
                           updated[0], status="cancelled")
    old_half.update(rescheduled=True, rescheduledToUid=moved)  # how Cal.com keeps the old uid
    calcom.put(old_half)
    calcom.put(api_booking(moved, "2026-10-16T19:30:00.000Z", "2026-10-16T20:00:00.000Z",
                           updated[1], rescheduled_from=created))
    calcom.put(api_booking("NoWebhookEver0000000001", "2026-12-01T15:00:00.000Z",
                           "2026-12-01T15:30:00.000Z", updated[2]))
    calcom.rate_limit_next = 1
    limited = reconcile(stack)
    assert limited.get("error") == 1  # 429: stops, remembers Retry-After
    assert reconcile(stack) == {"skipped": "rate_limited"}
    rclient.delete("calehr:reconcile:not-before")  # as if the Retry-After had passed

    first = reconcile(stack)
    assert first == {"seen": 3, "fed": 2, "known": 1, "error": 0}
    events = wait_for(lambda: len(e := outbox_events(outbox)) >= 3 and e, 30,
                      message="the reconciled S13 and S12")
    by_event = [(ev, placer) for ev, placer, _ in events]
    assert by_event[0] == ("S12", "7xQm2kVd9RbTn4FgHs1LpA")
    assert ("S13", "7xQm2kVd9RbTn4FgHs1LpA") in by_event  # same placer, new times
    assert not any(ev == "S15" for ev, _ in by_event)  # the old half did not cancel it
    assert ("S12", "NoWebhookEver0000000001") in by_event
    s13 = next(e for e in events if e[0] == "S13")
    assert s13[2] == "20261016143000-0500"
    n = len(outbox_events(outbox))

    again = reconcile(stack)
    assert again["fed"] == 0
    assert len(outbox_events(outbox)) == n  # nothing new at the EHR
    assert all(r["path"] == "/v2/bookings" for r in calcom.requests)
    assert calcom.requests[-1]["query"]["sortUpdatedAt"] == "asc"
    audit = subprocess.run([sys.executable, "-m", "calehr.cli", "audit", "--json", "--limit", "200"],
                           env=stack.env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    actions = [json.loads(line)["action"] for line in audit.stdout.splitlines()]
    assert actions.count("event.synthetic") == 2 and "event.accepted" in actions
