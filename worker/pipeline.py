"""process_event: load, normalise, dedupe, order, route, and queue one delivery per target."""

from __future__ import annotations

import logging

from adapters.calcom import api as calcom_api
from adapters.calcom.payload import normalise, parse_body
from core import clock
from core.crypto import DecryptError
from core.deliveries import Delivery, control_id_for
from core.errors import PayloadError
from core.faults import crash_point
from core.lookup import find_provider
from core.models import AppointmentEvent, EventKind
from core.redact import error_text
from core.replication import confirm
from core.runtime import Runtime
from worker.routing import route
from worker.rules import message_event_for, opted_in

log = logging.getLogger(__name__)

FINAL_STATES = ("skipped", "dead", "unrouted", "ignored", "done")
CANCEL_KINDS = (EventKind.CANCELLED.value, EventKind.REJECTED.value)


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
        _follow_up(rt, event_id, stored.state, None, stored.source)  # a retry after a crash
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
    _follow_up(rt, event_id, state, event, stored.source)  # before the drain: durable on its own

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


def _follow_up(rt: Runtime, event_id: str, state: str, event: AppointmentEvent | None,
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

    appt, uids = snap.appointment, snap.uids
    needed = _needed_uid(event, uids)
    if event.kind is EventKind.NO_SHOW and not appt:
        needed = event.uid
    if needed and needed not in uids and not force:
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

    sequence, mark = sequence_and_mark(event, appt)
    if not force:
        seen = snap.seen.get(mark)  # read in the snapshot's round trip
        if seen and seen != eid:
            rt.store.set_state(eid, "skipped", f"duplicate_of:{seen}", key)
            rt.audit.record("system", "event.skipped", eid, reason="logical_duplicate", of=seen)
            log.info("logical duplicate skipped", extra=ctx)
            return "skipped", [], [], False
        stale = skip_reason(event, sequence, appt, snap.uid_statuses)
        if stale:
            rt.store.set_state(eid, "skipped", stale, key)
            rt.audit.record("system", "event.skipped", eid, reason=stale)
            log.info("stale event skipped: %s", stale, extra=ctx)
            return "skipped", [], [], False

    uid_status = snap.uid_statuses.get(event.uid)
    message_event = message_event_for(event, uid_status)
    routed = route(event, rt.settings) if message_event else []
    targets = opted_in(event, routed, rt.settings)
    order = snap.next_order
    # a no-show goes out with the booking's last event (not an earlier no-show: it has no times)
    base = (appt.get("booking_event_id") or appt.get("last_event_id", "")
            if event.kind is EventKind.NO_SHOW else "")
    deliveries = [
        Delivery(id=f"{eid}.{t}", event_id=eid, appointment_key=key, target=t,
                 message_event=message_event or "", order=order,
                 control_id=control_id_for(f"{eid}.{t}"), state="pending",
                 base_event_id=base, force=force)
        for t in targets
    ]
    if message_event is None or (routed and not targets):
        state, reason = "skipped", f"not_mapped:{event.kind.value}"
    elif not targets:
        state, reason = "unrouted", "no_route_matched"
    else:
        state, reason = "accepted", ""

    def audit(pipe: object) -> None:  # recorded in the same MULTI/EXEC as the change
        if force:
            rt.audit.queue(pipe, "system", "event.forced", eid, appointment_key=key)
        if state == "unrouted":
            rt.audit.queue(pipe, "system", "event.unrouted", eid, appointment_key=key)
        elif state == "accepted":
            rt.audit.queue(pipe, "system", "event.accepted", eid, appointment_key=key,
                           message_event=message_event, targets=targets)
        if event.recurring:
            pipe.hset(ledger.appt(key), "recurring", event.series_uid or "1")
        if event.kind is not EventKind.NO_SHOW:
            pipe.hset(ledger.appt(key), "booking_event_id", eid)

    woken = ledger.accept(key, event_id=eid, uid=event.uid, previous_uid=event.previous_uid,
                          mark=mark, sequence=sequence, created_at=event.created_at.timestamp(),
                          status=event.kind.value, order=order, deliveries=deliveries,
                          event_hash=rt.store.keys.event(eid),
                          unprocessed=rt.store.keys.unprocessed,
                          event_state=state, event_reason=reason, extra=audit)
    if state == "unrouted":
        log.warning("event matched no route", extra=ctx)
        return "unrouted", [], woken, True
    if state == "skipped":
        return "skipped", [], woken, True
    log.info("event accepted", extra={**ctx, "outcome": message_event})
    return "accepted", targets, woken, True


def sequence_and_mark(event: AppointmentEvent, appt: dict[str, str]) -> tuple[int, str]:
    """The sequence the event is applied at (a body without one takes the appointment's last) and
    its logical-duplicate mark. No-shows from a person and from Cal Video share one mark."""
    sequence = event.sequence if event.sequence >= 0 else int(appt.get("last_sequence", 0))
    if event.kind is EventKind.NO_SHOW:
        return sequence, f"{sequence}:BOOKING_NO_SHOW_UPDATED:{event.no_show}"
    return sequence, f"{sequence}:{event.trigger}"


def skip_reason(event: AppointmentEvent, sequence: int, appt: dict[str, str],
                uid_statuses: dict[str, str]) -> str | None:
    """Why an event that is no duplicate must not go out (None: it goes)."""
    if event.kind.value in CANCEL_KINDS and uid_statuses.get(event.uid) in CANCEL_KINDS:
        return "stale:booking already cancelled"  # e.g. by a series follow-up
    return _stale_reason(event, sequence, appt)


def _needed_uid(event: AppointmentEvent, uids: set[str]) -> str | None:
    """The booking uid that must be known before this event can go out."""
    if event.kind is EventKind.RESCHEDULED:
        return event.previous_uid
    if event.kind in (EventKind.CREATED, EventKind.REQUESTED):
        return None
    return event.uid


def _stale_reason(event: AppointmentEvent, sequence: int, appt: dict[str, str]) -> str | None:
    if not appt or "last_sequence" not in appt:
        return None
    last_seq = int(appt["last_sequence"])
    last_created = float(appt.get("last_created", 0))
    last_status = appt.get("status", "")
    if sequence < last_seq:
        return f"stale:sequence {sequence} < {last_seq}"
    if sequence == last_seq:
        if event.kind.value in CANCEL_KINDS and last_status not in CANCEL_KINDS:
            return None  # on equal sequence a cancel wins
        if last_status in CANCEL_KINDS and event.kind.value not in CANCEL_KINDS:
            return "stale:appointment already cancelled at this sequence"
        if event.created_at.timestamp() < last_created:
            return "stale:createdAt older than the last applied event"
    return None


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
