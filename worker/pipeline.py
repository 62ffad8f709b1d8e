"""process_event: load, normalise, dedupe, order, route, and queue one delivery per target."""

from __future__ import annotations

import logging

from adapters.calcom import api as calcom_api
from adapters.calcom.payload import normalise, parse_body
from core import clock
from core.crypto import DecryptError
from core.errors import PayloadError
from core.faults import crash_point
from core.lookup import find_provider
from core.models import AppointmentEvent, EventKind
from core.redact import error_text
from core.replication import confirm
from core.runtime import Runtime
from worker.accept_plan import decide, log_plan, missing_predecessor, queue_plan

log = logging.getLogger(__name__)

FINAL_STATES = ("skipped", "dead", "unrouted", "ignored", "done")


class AppointmentBusy(Exception):
    """Another worker holds this appointment's lock; retry shortly."""


def process_event(rt: Runtime, event_id: str, force: bool = False) -> str:
    """Returns the event's new state. Safe to run twice for one event."""
    try:
        stored = rt.store.get(event_id)
    except DecryptError as exc:
        return _dead_at_ingest(rt, event_id, "decrypt_failed", exc)
    if stored is None:
        log.error("event not found", extra={"event_id": event_id})
        return "missing"
    if stored.state in FINAL_STATES and not force:
        follow_up(rt, event_id, stored.state, None, stored.source)  # a retry after a crash
        return stored.state
    try:
        event = normalise(event_id, parse_body(stored.body), rt.ledger.resolve)
    except PayloadError as exc:
        return _dead_at_ingest(rt, event_id, "invalid_payload", exc)
    except Exception as exc:  # noqa: BLE001 - a poison body: retrying cannot help, a person must see it
        log.warning("event cannot be normalised: %s", exc.__class__.__name__,
                    extra={"event_id": event_id})
        return _dead_at_ingest(rt, event_id, "normalise_failed", exc)

    blocker = calcom_api.BlockerType.from_settings(rt.settings.calcom)
    # echoes are bookings on the blocker type; other events only while a provider uses `api`
    maybe_echo = blocker.matches(event) or any(p.strategy == "api" for p in rt.settings.providers)
    if maybe_echo and calcom_api.is_echo(rt.redis, event, rt.settings.key_prefix, blocker):
        rt.store.save_normalised(event_id, event.to_dict())
        rt.store.set_state(event_id, "skipped", "echo_of_ehr_block", event.appointment_key)
        rt.audit.record("system", "event.skipped", event_id, reason="echo_of_ehr_block")
        log.info("echo of an EHR block skipped", extra={"event_id": event_id, "outcome": "skipped"})
        return "skipped"
    key = event.appointment_key
    hold = rt.settings.delivery.appointment_lock_seconds
    lock = rt.redis.lock(rt.ledger.lock_name(f"appt:{key}"), timeout=hold,
                         blocking_timeout=min(10.0, hold))
    if not lock.acquire():
        raise AppointmentBusy(key)
    try:
        confirm(rt.redis, rt.settings.redis, rt.settings.key_prefix)  # a lock a failover keeps
        state, targets, woken, latest = _accept(rt, event, stored.state, force)
        if state != "waiting":
            crash_point("after_commit_before_unpark")
        provider = find_provider(rt.settings.providers, event)
        if provider is not None and state in ("accepted", "unrouted") and latest:
            rt.conflicts.track(provider, event)  # under the lock: in order
    finally:
        lock.release()
    for waiting_id in woken:  # woken in the accept's MULTI; the sweep re-sends them otherwise
        rt.reprocess(waiting_id, False)
    follow_up(rt, event_id, state, event, stored.source)  # before the drain: durable on its own

    if len(targets) == 1:  # deliver now in this task: saves a Celery round trip per booking
        from worker.delivery import drain

        try:
            drain(rt, key, targets[0], known={event_id: (event, stored.received_at)})
        except Exception:  # noqa: BLE001 - the queue is in Redis; a drain task takes it up
            log.exception("inline drain failed", extra={"event_id": event_id})
            rt.kick(key, targets[0], None)
    else:  # several targets: one drain task each, so a slow target holds back no other
        for target in targets:
            rt.kick(key, target, None)
    return state


def follow_up(rt: Runtime, event_id: str, state: str, event: AppointmentEvent | None,
               source: str) -> None:
    """The last steps after an accept. Each is safe to repeat, and the event stays in the
    unprocessed set (the sweep re-runs it) until they are done: no step relies on this task."""
    if state == "waiting":  # parked (or woken at once, then left in the unprocessed set)
        return
    if state not in ("dead", "missing"):
        dl = rt.deadletters.for_event(event_id)
        if dl and not dl.delivery_id and dl.state == "replayed":
            rt.deadletters.set_state(dl.id, "resolved", "system", f"event {state}")
    if state in ("accepted", "unrouted") and source != "reconciliation":
        if event is None:  # a retry after a crash: the event as it was accepted
            data = rt.store.normalised(event_id)
            event = AppointmentEvent.from_dict(data) if data else None
        if event is not None and event.kind is EventKind.CANCELLED:
            from worker.series import after_cancel

            after_cancel(rt, event)  # one cancel may stand for several occurrences of a series
    rt.store.followed_up(event_id)


def _accept(rt: Runtime, event: AppointmentEvent, current: str,
            force: bool) -> tuple[str, list[str], list[str], bool]:
    """(state, targets to drain, events woken, whether this is the appointment's latest event)."""
    ledger, key, eid = rt.ledger, event.appointment_key, event.event_id
    ctx = {"event_id": eid, "appointment_key": key, "trigger": event.trigger}

    # the normalised view is saved in the snapshot's round trip, before any decision
    snap = ledger.snapshot(key, eid, extra=lambda pipe: rt.store.save_normalised(
        eid, event.to_dict(), pipe))
    order = snap.accepted_order
    if order is not None:  # a retry after a crash: make sure every delivery is queued
        targets = []
        for delivery_id in ledger.deliveries_for_event(eid):
            d = ledger.get_delivery(delivery_id)
            if d and d.state in ("pending", "sending"):
                ledger.enqueue(key, d.target, d.id, d.order)
                targets.append(d.target)
        # wake again what waits on its uids (the first run may have died before re-queueing)
        uids = [event.uid] + ([event.previous_uid] if event.previous_uid else [])
        woken = ledger.wake(uids, rt.store.keys.unprocessed, repr(clock.now()))
        return "accepted", targets, woken, snap.appointment.get("last_event_id") == eid

    needed = missing_predecessor(event, snap, force)
    if needed:
        elsewhere = ledger.resolve(needed)
        if elsewhere is not None and elsewhere != key:
            if ledger.resolve(event.uid) != key:
                # keyed before its booking was known (that accept ran meanwhile): key it again
                log.info("predecessor known under another key: again", extra=ctx)
                return "waiting", [], [eid], False
            # its own uid anchors this appointment, its predecessor another one: waiting cannot
            # help, and a guess could move the wrong patient's visit
            _dead_at_ingest(rt, eid, "identity_conflict", PayloadError(
                f"predecessor {needed} belongs to appointment {elsewhere}, not {key}", 422))
            return "dead", [], [], False
        deadline = clock.now() + rt.settings.delivery.order_wait_seconds
        if ledger.park(key, needed, eid, deadline, event_hash=rt.store.keys.event(eid),
                       unprocessed=rt.store.keys.unprocessed):
            log.info("predecessor arrived while parking: again", extra=ctx)
            return "waiting", [], [eid], False
        log.info("event waits for its predecessor", extra=ctx)
        return "waiting", [], [], False

    plan = decide(rt, event, snap, force)
    pipe = rt.redis.pipeline(transaction=True)
    at = queue_plan(rt, pipe, event, plan, force)
    answers = pipe.execute()
    woken = [w.decode() for w in answers[at] or []] if at is not None else []
    log_plan(event, plan)
    if plan.skipped_as is not None:
        return "skipped", [], woken, False
    return plan.state, plan.targets if plan.state == "accepted" else [], woken, True


def _dead_at_ingest(rt: Runtime, event_id: str, code: str, exc: Exception) -> str:
    dl_id = rt.deadletters.add(stage="ingest", error_code=code,
                               error_class=exc.__class__.__name__, error_text=error_text(exc),
                               event_id=event_id)
    rt.store.set_state(event_id, "dead", code)
    log.error("event dead-lettered at ingest: %s", code,
              extra={"event_id": event_id, "dead_letter_id": dl_id})
    return "dead"


def expire_wait(rt: Runtime, event_id: str) -> bool:
    """An event waited too long for its predecessor: dead-letter it (stage ordering)."""
    if rt.store.state(event_id) != "waiting":
        return False
    stored = rt.store.get(event_id)
    key = stored.appointment_key if stored else ""
    needed = rt.redis.hget(rt.store.keys.event(event_id), "waiting_for")
    if needed and rt.ledger.resolve(needed.decode()):  # it came (under any key): wake, not expire
        rt.ledger.wake([needed.decode()], rt.store.keys.unprocessed, repr(clock.now()))
        rt.reprocess(event_id, False)
        return False
    dl_id = rt.deadletters.add(
        stage="ordering", error_code="predecessor_missing", error_class="OrderWaitExpired",
        error_text=("the booking this event changes was never seen within "
                    f"{rt.settings.delivery.order_wait_seconds:.0f}s; replay with force to send it"),
        event_id=event_id, appointment_key=key)
    rt.store.set_state(event_id, "dead", "predecessor_missing")
    log.warning("order wait expired", extra={"event_id": event_id, "dead_letter_id": dl_id,
                                             "appointment_key": key})
    return True
