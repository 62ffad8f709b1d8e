"""Poison bodies: signed, accepted by the receiver, but unusable in the worker.

Each must end at once as a dead letter at stage ingest (with its error class), never re-queued.
The hypothesis test feeds mutated Cal.com bodies through the real pipeline (real Redis, the real
process_event and drain, a file target): every one ends delivered, skipped, unrouted or dead.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from adapters.calcom.payload import parse_body
from core.config import Settings
from core.errors import PayloadError
from core.runtime import Runtime
from tests.support import base_env, config_text, fixture_bytes, post_signed, wait_for
from tests.worker.helpers import dead_letters
from worker import pipeline

FINAL = {"done", "skipped", "unrouted", "dead", "ignored"}


def poisoned(name: str, **changes: object) -> bytes:
    data = json.loads(fixture_bytes(name))
    data["payload"].update(changes)
    return json.dumps(data).encode()


def test_poison_bodies_dead_letter_at_ingest_once_and_leave_the_queue(stack, outbox, rclient):
    stack.write_config(config_text(outbox))
    base = stack.web()
    stack.worker()
    stack.beat()
    poison = [poisoned("02_booking_created.json", attendees=5),
              poisoned("02_booking_created.json", uid={"not": "a uid"})]
    # wrong-typed extras are read around (the booking still goes out), never a crash
    tolerated = [poisoned("02_booking_created.json", uid="Tolerat1", userFieldsResponses=["x"]),
                 poisoned("02_booking_created.json", uid="Tolerat2", responses="not an object",
                          userFieldsResponses=7)]
    ids, fine = [], []
    for body, into in [(b, ids) for b in poison] + [(b, fine) for b in tolerated]:
        answer = post_signed(base, body)
        assert answer.status_code == 202, answer.text  # the receiver lets them through
        into.append(answer.json()["event_id"])
    for event_id in ids:
        wait_for(lambda e=event_id: rclient.hget(f"calehr:event:{e}", "state") == b"dead", 30,
                 message=f"{event_id} dead-lettered")
    for event_id in fine:
        wait_for(lambda e=event_id: rclient.hget(f"calehr:event:{e}", "state") == b"done", 30,
                 message=f"{event_id} delivered")
    dls = {d["event_id"]: d for d in dead_letters(rclient)}
    assert set(dls) == set(ids)
    for event_id in ids:
        assert dls[event_id]["stage"] == "ingest"
        assert dls[event_id]["error_code"] == "invalid_payload"
        assert dls[event_id]["error_class"] == "PayloadError"
        # out of the unprocessed set: the sweep can never send it round again
        assert rclient.zscore("calehr:events:unprocessed", event_id) is None
    # a fence: the beat sweep has run past the stuck-event age, and still one record each
    fence = post_signed(base, fixture_bytes("02_booking_created.json")).json()["event_id"]
    wait_for(lambda: rclient.hget(f"calehr:event:{fence}", "state") == b"done", 30,
             message="the fence delivered")
    assert len(dead_letters(rclient)) == len(ids)


def test_any_exception_while_normalising_is_one_dead_letter_at_ingest(runtime: Runtime, rclient,
                                                                     monkeypatch):
    """A failure nobody foresaw (here: normalise raising a KeyError) is treated like a poison
    body: one dead letter with its class, out of the unprocessed set, never retried."""
    rt = runtime
    event_id, _ = rt.store.put(fixture_bytes("02_booking_created.json"), "BOOKING_CREATED")

    def explode(*args, **kwargs):
        raise KeyError("nobody foresaw this")

    monkeypatch.setattr(pipeline, "normalise", explode)
    assert pipeline.process_event(rt, event_id) == "dead"
    assert pipeline.process_event(rt, event_id) == "dead"  # a second run changes nothing
    (dl,) = dead_letters(rclient)
    assert (dl["stage"], dl["error_code"], dl["error_class"]) == ("ingest", "normalise_failed",
                                                                  "KeyError")
    assert rclient.zscore("calehr:events:unprocessed", event_id) is None


# -- mutated bodies through the real pipeline ------------------------------------------------
BASES = ["02_booking_created.json", "03_booking_requested.json", "04_booking_rescheduled.json",
         "05_booking_cancelled.json"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6)


def _paths(value: object, prefix: tuple = ()) -> list[tuple]:
    """Every key/index path inside a JSON value."""
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            found += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found += _paths(v, (*prefix, i))
    return found


@st.composite
def mutated_bodies(draw: st.DrawFn) -> bytes:
    data = json.loads(fixture_bytes(draw(st.sampled_from(BASES))))
    uid = draw(st.text("abcdefghjkmnpqrstuvwxyz0123456789", min_size=6, max_size=10))
    data["payload"]["uid"] = uid  # each example its own booking (a few keep a known one)
    for _ in range(draw(st.integers(1, 3))):
        top = [(k,) for k in data["payload"]]  # half the time a top-level field: most bugs live there
        path = draw(st.sampled_from(top) | st.sampled_from(_paths(data["payload"])))
        parent = data["payload"]
        for step in path[:-1]:
            parent = parent[step]
        if draw(st.booleans()) and isinstance(parent, dict):
            parent.pop(path[-1], None)
        else:
            parent[path[-1]] = draw(json_values)
    return json.dumps(data).encode()


@pytest.fixture
def runtime(redis_url: str, outbox: Path, tmp_path: Path) -> Runtime:
    config = tmp_path / "calehr.toml"
    config.write_text(config_text(outbox))
    queued: list[str] = []
    rt = Runtime.build(Settings.load(base_env(config, redis_url)), kick=lambda *_: None,
                       reprocess=lambda event_id, force: queued.append(event_id))
    rt.queued = queued  # type: ignore[attr-defined]
    return rt


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=mutated_bodies())
def test_mutated_bodies_end_delivered_skipped_unrouted_or_dead(runtime: Runtime, body: bytes) -> None:
    try:
        parsed = parse_body(body)
    except PayloadError:
        assume(False)  # the receiver answers 4xx: never stored
        return
    event_id, _ = runtime.store.put(body, parsed.trigger,
                                    state="received" if parsed.handled else "ignored")
    runtime.queued.append(event_id)  # type: ignore[attr-defined]
    for _ in range(20):  # the event, then what it woke
        if not runtime.queued:  # type: ignore[attr-defined]
            break
        pipeline.process_event(runtime, runtime.queued.pop(0))  # type: ignore[attr-defined]
    if runtime.store.state(event_id) == "waiting":  # its booking never came: the deadline passes
        assert pipeline.expire_wait(runtime, event_id)
    state = runtime.store.state(event_id)
    assert state in FINAL, state
    if state == "dead":
        dls = [d for d in dead_letters(runtime.redis) if d["event_id"] == event_id]
        assert dls and dls[0]["error_class"], dls
    assert runtime.redis.zscore(runtime.store.keys.unprocessed, event_id) is None


def test_a_reschedule_whose_ids_name_two_appointments_is_a_dead_letter_not_a_loop(
        runtime: Runtime, rclient) -> None:
    """Found by the webhook fuzz after the merge of issues 14 and 15: the new uid was already a
    booking of its own, its predecessor belonged to another appointment, and the event parked,
    was woken by the sweep (the predecessor is known) and parked again, for ever."""
    rt = runtime
    moved = json.loads(fixture_bytes("04_booking_rescheduled.json"))["payload"]["uid"]
    first = fixture_bytes("02_booking_created.json")
    same_uid_alone = poisoned("02_booking_created.json", uid=moved, iCalUID=None)
    for body in (first, same_uid_alone):
        event_id, _ = rt.store.put(body, "BOOKING_CREATED")
        assert pipeline.process_event(rt, event_id) == "accepted"
    event_id, _ = rt.store.put(fixture_bytes("04_booking_rescheduled.json"), "BOOKING_RESCHEDULED")
    assert pipeline.process_event(rt, event_id) == "dead"
    (dl,) = [d for d in dead_letters(rclient) if d["event_id"] == event_id]
    assert (dl["stage"], dl["error_code"]) == ("ingest", "identity_conflict")
    assert rclient.zscore("calehr:events:unprocessed", event_id) is None
    assert pipeline.process_event(rt, event_id) == "dead"  # a later sweep finds nothing to redo
