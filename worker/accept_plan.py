"""What accepting an event changes: decided from a snapshot, written in the caller's MULTI.

`decide` is pure (settings, the event and the appointment's snapshot in, a Plan out), so one
event (worker/pipeline.py) and a batch of them (worker/batch.py) decide alike; `queue_plan` adds
the Plan's writes to a MULTI the caller executes: one event's, or a whole batch's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from core.deliveries import Delivery, control_id_for
from core.ledger import AppointmentSnapshot
from core.models import AppointmentEvent, EventKind
from core.runtime import Runtime
from worker.routing import route
from worker.rules import message_event_for, opted_in

log = logging.getLogger(__name__)

CANCEL_KINDS = (EventKind.CANCELLED.value, EventKind.REJECTED.value)


@dataclass(frozen=True)
class Plan:
    state: str  # accepted | unrouted | skipped
    reason: str
    sequence: int
    mark: str
    message_event: str | None = None
    targets: list[str] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    base_event_id: str = ""
    # a duplicate or a stale event: only its state changes (audit reason, and what it repeats)
    skipped_as: str | None = None
    duplicate_of: str = ""
    order: int = 0  # the accept order reserved in the snapshot


def missing_predecessor(event: AppointmentEvent, snap: AppointmentSnapshot,
                        force: bool) -> str | None:
    """The booking uid the event must wait for (None: it can be decided now)."""
    needed = needed_uid(event, snap.uids)
    if event.kind is EventKind.NO_SHOW and not snap.appointment:
        needed = event.uid
    if needed and needed not in snap.uids and not force:
        return needed
    return None


def decide(rt: Runtime, event: AppointmentEvent, snap: AppointmentSnapshot, force: bool) -> Plan:
    """For an event not accepted before whose predecessor is known (see missing_predecessor)."""
    appt = snap.appointment
    sequence, mark = sequence_and_mark(event, appt)
    if not force:
        seen = snap.seen.get(mark)
        if seen and seen != event.event_id:
            return Plan("skipped", f"duplicate_of:{seen}", sequence, mark,
                        skipped_as="logical_duplicate", duplicate_of=seen)
        stale = skip_reason(event, sequence, appt, snap.uid_statuses)
        if stale:
            return Plan("skipped", stale, sequence, mark, skipped_as=stale)
    uid_status = snap.uid_statuses.get(event.uid)
    message_event = message_event_for(event, uid_status)
    routed = route(event, rt.settings) if message_event else []
    targets = opted_in(event, routed, rt.settings)
    eid, key = event.event_id, event.appointment_key
    # a no-show goes out with the booking's last event (not an earlier no-show: it has no times)
    base = (appt.get("booking_event_id") or appt.get("last_event_id", "")
            if event.kind is EventKind.NO_SHOW else "")
    deliveries = [
        Delivery(id=f"{eid}.{t}", event_id=eid, appointment_key=key, target=t,
                 message_event=message_event or "", order=snap.next_order,
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
    return Plan(state, reason, sequence, mark, message_event, targets, deliveries, base,
                order=snap.next_order)


def queue_plan(rt: Runtime, pipe: Any, event: AppointmentEvent, plan: Plan,
               force: bool) -> int | None:
    """Add the plan's writes to `pipe` (a MULTI). Returns the index of the woken events' answer
    (None for a skipped duplicate or stale event: it makes nothing known)."""
    ledger, key, eid = rt.ledger, event.appointment_key, event.event_id
    if plan.skipped_as is not None:
        rt.store.queue_state(pipe, eid, "skipped", plan.reason, key)
        details = {"of": plan.duplicate_of} if plan.duplicate_of else {}
        rt.audit.queue(pipe, "system", "event.skipped", eid, reason=plan.skipped_as, **details)
        return None

    def audit(pipe: Any) -> None:  # recorded in the same MULTI/EXEC as the change
        if force:
            rt.audit.queue(pipe, "system", "event.forced", eid, appointment_key=key)
        if plan.state == "unrouted":
            rt.audit.queue(pipe, "system", "event.unrouted", eid, appointment_key=key)
        elif plan.state == "accepted":
            rt.audit.queue(pipe, "system", "event.accepted", eid, appointment_key=key,
                           message_event=plan.message_event, targets=plan.targets)

    existing = ({d.id for d in plan.deliveries if rt.redis.exists(ledger.delivery_key(d.id))}
                if force else set())  # records only a forced run can find (a fresh one makes them)
    return ledger.queue_accept(
        pipe, key, event_id=eid, uid=event.uid, previous_uid=event.previous_uid, mark=plan.mark,
        sequence=plan.sequence, created_at=event.created_at.timestamp(),
        status=event.kind.value, order=plan.order, deliveries=plan.deliveries,
        event_hash=rt.store.keys.event(eid), unprocessed=rt.store.keys.unprocessed,
        event_state=plan.state, event_reason=plan.reason, extra=audit, existing=existing,
        appointment_fields=appointment_fields(event))


def appointment_fields(event: AppointmentEvent) -> dict[str, str]:
    """What the appointment's hash also keeps of an accepted event."""
    fields = {}
    if event.recurring:
        fields["recurring"] = event.series_uid or "1"
    if event.kind is not EventKind.NO_SHOW:  # a no-show goes out with this event's times
        fields["booking_event_id"] = event.event_id
    return fields


def log_plan(event: AppointmentEvent, plan: Plan) -> None:
    ctx = {"event_id": event.event_id, "appointment_key": event.appointment_key,
           "trigger": event.trigger}
    if plan.skipped_as == "logical_duplicate":
        log.info("logical duplicate skipped", extra=ctx)
    elif plan.skipped_as is not None:
        log.info("stale event skipped: %s", plan.skipped_as, extra=ctx)
    elif plan.state == "unrouted":
        log.warning("event matched no route", extra=ctx)
    elif plan.state == "accepted":
        log.info("event accepted", extra={**ctx, "outcome": plan.message_event})


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


def needed_uid(event: AppointmentEvent, uids: set[str]) -> str | None:
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


