"""The api strategy: an EHR block becomes one Cal.com blocker booking (a local server that behaves
like API v2), and the webhooks Cal.com sends back for it never reach the EHR."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from adapters.calcom import api as calcom_api
from core.config import CalcomSettings, ProviderSettings
from tests.adapters.calcom.fake_api import API_KEY, BLOCKER_EVENT_TYPE, FakeCalcomApi
from tests.adapters.hl7v2.helpers import event_from
from tests.adapters.hl7v2.inbound_samples import siu
from tests.adapters.hl7v2.listener import exchange, msa, start_listener
from tests.support import FUTURE_YEAR as YEAR
from tests.support import config_text, fixture_bytes, post_signed, wait_for

PROVIDER = ProviderSettings(calcom_user="dr-okafor", ehr_id="OKAFOR01", name="Okafor^Amina",
                            strategy="api")
BLOCK_START = datetime(YEAR, 1, 14, 15, 0, tzinfo=UTC)  # 09:00 America/Chicago


@pytest.fixture
def calcom(rclient):
    seen: list[tuple[str, list[bytes]]] = []

    def echo_keys_at_call(path: str, _body: dict) -> None:
        seen.append((path, sorted(rclient.keys("calehr:echo:*"))))

    server = FakeCalcomApi(on_request=echo_keys_at_call)
    server.echo_keys_at_call = seen
    yield server
    server.close()


def api_config(outbox, url: str) -> str:
    text = config_text(outbox)
    text = text.replace('ics_token = "tok-okafor"\n', 'ics_token = "tok-okafor"\nstrategy = "api"\n', 1)
    return text.replace("[calcom]\n", f'[calcom]\napi_url = "{url}"\napi_key = "{API_KEY}"\n', 1)


def blocker_webhook(trigger: str, booking: dict, sequence: int) -> bytes:
    """What Cal.com sends for a booking on the hidden event type (2021-10-20 payload)."""
    data = json.loads(fixture_bytes("02_booking_created.json"))
    who = {"name": "EHR hold", "email": "ehr-hold@calehr.invalid", "timeZone": "UTC",
           "language": {"locale": "en"}, "utcOffset": 0}
    data["triggerEvent"] = trigger
    data["createdAt"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    data["payload"].update(
        uid=booking["uid"], bookingId=booking["id"], type=BLOCKER_EVENT_TYPE["slug"],
        eventTypeId=BLOCKER_EVENT_TYPE["id"], title="EHR hold", eventTitle="EHR hold",
        startTime=booking["start"].replace(".000Z", "Z"), endTime=booking["end"].replace(".000Z", "Z"),
        iCalUID=f"{booking['uid']}@Cal.com", iCalSequence=sequence, attendees=[who],
        responses={"name": {"label": "your_name", "value": "EHR hold"},
                   "email": {"label": "email_address", "value": who["email"]}},
        userFieldsResponses={}, metadata=booking["metadata"], location="", additionalNotes="",
        description="", status="CANCELLED" if trigger == "BOOKING_CANCELLED" else "ACCEPTED")
    return json.dumps(data, separators=(",", ":")).encode()


def event_state(rclient, event_id: str) -> tuple[str, str]:
    state, reason = rclient.hmget(f"calehr:event:{event_id}", "state", "reason")
    return (state or b"").decode(), (reason or b"").decode()


@pytest.mark.slow
def test_blocker_booking_and_its_webhooks_never_reach_the_ehr(stack, outbox, rclient, calcom):
    stack.write_config(api_config(outbox, calcom.url))
    base = stack.web()
    stack.worker()
    _, port = start_listener(stack)

    (ack,) = exchange(port, siu("S12", "API-1", appt_id="API-APPT"))
    assert msa(ack)[1] == "AA"
    booking = wait_for(lambda: len(calcom.bookings) == 1 and next(iter(calcom.bookings.values())),
                       30, message="one blocker booking at the fake Cal.com")
    create = calcom.requests[0]
    assert create["path"] == "/v2/bookings"
    assert create["headers"]["Authorization"] == f"Bearer {API_KEY}"
    assert create["headers"]["cal-api-version"] == "2024-08-13"
    assert create["body"]["start"] == f"{YEAR}-01-14T15:00:00.000Z"
    assert create["body"]["lengthInMinutes"] == 30
    assert create["body"]["eventTypeSlug"] == "ehr-hold" and create["body"]["username"] == "dr-okafor"
    assert create["body"]["metadata"]["origin"] == "ehr-bridge"
    # the echo ledger entry was in Redis before the call reached Cal.com
    assert calcom.echo_keys_at_call[0][1] == [f"calehr:echo:slot:dr-okafor|{YEAR}-01-14T15:00:00.000Z".encode()]

    created = post_signed(base, blocker_webhook("BOOKING_CREATED", booking, 0))
    assert created.status_code == 202
    event_id = created.json()["event_id"]
    assert wait_for(lambda: event_state(rclient, event_id)[0] == "skipped"
                    and event_state(rclient, event_id), 30) == ("skipped", "echo_of_ehr_block")

    (ack,) = exchange(port, siu("S15", "API-2", appt_id="API-APPT", status="Cancelled"))
    assert msa(ack)[1] == "AA"
    wait_for(lambda: booking["status"] == "cancelled", 30, message="the blocker cancelled")
    cancel = calcom.requests[-1]
    assert cancel["path"] == f"/v2/bookings/{booking['uid']}/cancel"
    assert calcom.echo_keys_at_call[-1][1] == [f"calehr:echo:uid:{booking['uid']}".encode()]
    cancelled = post_signed(base, blocker_webhook("BOOKING_CANCELLED", booking, 1))
    event_id = cancelled.json()["event_id"]
    assert wait_for(lambda: event_state(rclient, event_id)[0] == "skipped"
                    and event_state(rclient, event_id), 30) == ("skipped", "echo_of_ehr_block")
    assert list(outbox.glob("*.hl7")) == []

    # a patient's own booking still goes through: the worker was up the whole time
    assert post_signed(base, fixture_bytes("02_booking_created.json")).status_code == 202
    files = wait_for(lambda: list(outbox.glob("*.hl7")), 30, message="the patient booking")
    assert len(files) == 1 and len(calcom.bookings) == 1


def test_is_echo_matches_the_blocker_and_nothing_else(rclient):
    end = BLOCK_START + timedelta(minutes=30)
    start_iso = BLOCK_START.strftime("%Y-%m-%dT%H:%M:%SZ")
    end_iso = end.strftime("%Y-%m-%dT%H:%M:%SZ")
    blocker = event_from("02_booking_created.json", uid="BlockerUid000000000001",
                         type="ehr-hold", startTime=start_iso, endTime=end_iso)
    patient_same_slot = event_from("02_booking_created.json", startTime=start_iso, endTime=end_iso)
    assert not calcom_api.is_echo(rclient, blocker)

    calcom_api.expect_create(rclient, "calehr", PROVIDER, BLOCK_START, "blk@calehr")
    assert calcom_api.is_echo(rclient, blocker)  # before Cal.com has even answered
    assert not calcom_api.is_echo(rclient, patient_same_slot)  # a patient event type

    calcom_api.created(rclient, "calehr", PROVIDER, BLOCK_START, end, "BlockerUid000000000001",
                       "blk@calehr")
    assert calcom_api.is_echo(rclient, blocker)
    assert not calcom_api.is_echo(rclient, patient_same_slot)
    other_blocker_type = event_from("02_booking_created.json", uid="SomeoneElse00000000001",
                                    type="ehr-hold", startTime=start_iso, endTime=end_iso)
    assert not calcom_api.is_echo(rclient, other_blocker_type)  # the slot entry is spent
    moved = event_from("04_booking_rescheduled.json", rescheduleUid="BlockerUid000000000001")
    assert calcom_api.is_echo(rclient, moved)
    assert rclient.ttl("calehr:echo:uid:BlockerUid000000000001") > 0


def test_blocker_event_type_and_attendee_come_from_the_config(rclient, calcom):
    settings = CalcomSettings(webhook_secrets=("s",), api_url=calcom.url, api_key=API_KEY,
                              blocker_event_type_id=BLOCKER_EVENT_TYPE["id"],
                              blocker_event_type_slug="not-used-when-an-id-is-set",
                              blocker_attendee_email="holds@clinic.test")
    api = calcom_api.BlockerApi(settings)
    uid = api.create(PROVIDER, BLOCK_START, BLOCK_START + timedelta(minutes=20), "blk-cfg@calehr")
    body = calcom.requests[-1]["body"]
    assert body["eventTypeId"] == 5501 and "eventTypeSlug" not in body and "username" not in body
    assert body["attendee"]["email"] == "holds@clinic.test"
    assert calcom.bookings[uid]["status"] != "cancelled"

    # the echo check knows the configured type by id, whatever its slug
    calcom_api.expect_create(rclient, "calehr", PROVIDER, BLOCK_START, "blk-cfg@calehr")
    echo = event_from("02_booking_created.json", uid="ByIdBlocker00000000001", type="renamed-hold",
                      eventTypeId=5501, startTime=BLOCK_START.strftime("%Y-%m-%dT%H:%M:%SZ"))
    blocker = calcom_api.BlockerType.from_settings(settings)
    assert not calcom_api.is_echo(rclient, echo)  # the default (slug ehr-hold) does not match
    assert calcom_api.is_echo(rclient, echo, blocker=blocker)
