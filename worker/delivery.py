"""drain: deliver one appointment's queue for one target, in order, one worker at a time."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

from core import clock
from core.config import TargetSettings
from core.deliveries import Delivery
from core.ehr_echo import EhrEchoLedger, Filler, fingerprint
from core.errors import MappingError
from core.faults import crash_point
from core.ledger import COMMIT_ANSWERS, Ledger
from core.models import AppointmentEvent, DeliveryResult, EventKind
from core.redact import error_text
from core.replication import confirm
from core.retry import backoff_seconds
from core.runtime import Runtime
from worker.events import Loaded, load_event
from worker.transports import send_event

log = logging.getLogger(__name__)

# renews the lock and answers the queue's head (one round trip where there were two):
# {1 if the lock was still ours and is renewed else 0, head...}
RENEW_HEAD = """
local renewed = 0
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  renewed = 1
end
local answer = redis.call('ZRANGE', KEYS[2], 0, 0)
table.insert(answer, 1, renewed)
return answer
"""
MAX_PER_RUN = 50  # messages one drain task sends at most; then it kicks itself again
# queues woken at once when a circuit closes (each finished one wakes the next: core/waiters.py)
WAKE_IN_FLIGHT = 64
# messages that only repeat a change the EHR made itself are not sent back (S14 carries more:
# a meeting ended, a no-show taken back)
ECHO_CHECKED = ("S12", "S13", "S15", "S26")


def drain(rt: Runtime, key: str, target: str, known: dict[str, Loaded] | None = None) -> str:
    """Deliver what is due at the head of (key, target). Returns why it stopped.
    `known`: events the caller has loaded already (saves a decrypt and a parse)."""
    lock = rt.ledger.lock_name(f"drain:{key}|{target}")
    ttl_ms = int(rt.settings.delivery.lock_ttl_seconds * 1000)
    token = uuid.uuid4().hex
    outcome = "busy"
    waiters = rt.ledger.waiters
    for _ in range(3):  # re-check after release: a kick may have raced with our last look
        if not rt.redis.set(lock, token, nx=True, px=ttl_ms):
            return outcome
        try:
            confirm(rt.redis, rt.settings.redis, rt.settings.key_prefix)  # a lock a failover keeps
            outcome = _drain_locked(rt, key, target, token, lock, ttl_ms, known or {})
        finally:
            following = waiters.release(lock, token, key, target, clock.now())
            if following is not None:  # a woken queue hands over to the next waiting one
                rt.kick(following, target, None)
        if outcome == "more":
            rt.kick(key, target, None)
            return outcome
        if outcome == "circuit-open":  # it may have closed (and woken the waiters) meanwhile
            if rt.breaker.state(target).state != "closed":
                return outcome
            continue
        if outcome != "empty" or rt.ledger.head(key, target) is None:
            return outcome
    return outcome


def _drain_locked(rt: Runtime, key: str, target: str, token: str, lock: str, ttl_ms: int,
                  known: dict[str, Loaded]) -> str:
    # far from the task's time limit: a send can take its connect and read timeouts on top
    until = clock.now() + rt.settings.worker.task_soft_time_limit / 4
    delivery_id = rt.ledger.head(key, target)
    for _ in range(MAX_PER_RUN):
        if clock.now() > until:
            return "more"
        if delivery_id is None:
            return "empty"
        d = rt.ledger.get_delivery(delivery_id)
        if d is None:  # record gone (retention or manual cleanup): unblock the queue
            rt.ledger.dequeue(key, target, delivery_id)
            delivery_id = rt.ledger.head(key, target)
            continue
        now = clock.now()
        if d.next_attempt_at > now:
            rt.ledger.schedule(key, target, d.next_attempt_at)
            return "waiting"
        allowed, _ = rt.breaker.allow(target, token)
        if not allowed:  # woken when the circuit closes, or kicked as its half-open probe
            rt.ledger.waiters.join(key, target, now)
            return "circuit-open"
        step = deliver_one(rt, d, known)
        renewed, *heads = rt.redis.eval(RENEW_HEAD, 2, lock, rt.ledger.pending(key, target),
                                        token, ttl_ms)
        if not renewed:  # lost (expired, a failover)
            return "lost-lock"  # stop: another worker may hold this queue now
        if step == "retry":
            return "retrying"
        delivery_id = heads[0].decode() if heads else None
    return "more"


@dataclass(frozen=True)
class Prepared:
    """A delivery checked and ready to send: its event, and what the EHR will then hold."""

    target: TargetSettings
    event: AppointmentEvent
    received_at: float
    ehr_state: str
    override: bytes | None
    filler: Filler | None
    ctx: dict[str, str]


STATE_READS = 4


def queue_state_read(rt: Runtime, pipe: Any, key: str, target: str) -> None:
    """What `prepare` needs to know of the target, in STATE_READS answers: its applied state,
    and the EHR's (echo check, filler id)."""
    pipe.hgetall(rt.ledger.target_key(key, target))
    EhrEchoLedger(rt.redis, rt.settings.key_prefix).queue_read(pipe, key, target)


def prepare(rt: Runtime, d: Delivery, known: dict[str, Loaded],
            answers: list[Any]) -> Prepared | str:
    """The checks before an attempt (`answers`: see queue_state_read). Returns the Prepared
    delivery, or "done" when it was skipped or dead-lettered instead."""
    applied, current, made, filler = answers
    target = rt.settings.target(d.target)
    ctx = {"event_id": d.event_id, "appointment_key": d.appointment_key, "target": d.target,
           "control_id": d.control_id, "delivery_id": d.id}
    if not d.force and int(applied.get(b"applied_order", 0)) > d.order:
        return _skip(rt, d, "stale:a later change was already applied", ctx)
    try:
        event, received_at = _event_for(rt, d, known)
    except (MappingError, KeyError, ValueError) as exc:
        return _dead(rt, d, "mapping", "event_unavailable", exc.__class__.__name__,
                     error_text(exc), None, ctx)
    ehr_state = fingerprint(d.message_event, event.start, event.end)
    if not d.force and d.message_event in ECHO_CHECKED and ehr_state \
            and EhrEchoLedger.made_from(current, made, ehr_state, event.uid):
        return _skip(rt, d, "echo:the EHR made this change itself", ctx)
    override = rt.ledger.override(d.id) if d.has_override else None
    return Prepared(target, event, received_at, ehr_state, override,
                    EhrEchoLedger.filler_from(filler) if target.kind != "fhir" else None, ctx)


def queue_start(rt: Runtime, pipe: Any, d: Delivery, prep: Prepared) -> int:
    """Count the attempt (before the send). Returns the index of the attempt number."""
    at = len(pipe)
    rt.ledger.queue_start_attempt(pipe, d.id)
    return at


def deliver_one(rt: Runtime, d: Delivery, known: dict[str, Loaded] | None = None) -> str:
    """One attempt for the head delivery. Returns done | retry."""
    pipe = rt.redis.pipeline(transaction=False)
    queue_state_read(rt, pipe, d.appointment_key, d.target)
    prep = prepare(rt, d, known or {}, pipe.execute())
    if isinstance(prep, str):
        return prep
    pipe = rt.redis.pipeline(transaction=True)
    at = queue_start(rt, pipe, d, prep)
    attempt = int(pipe.execute()[at])
    try:
        result, wire, entry = send_attempt(rt, d, prep, attempt)
    except MappingError as exc:
        return mapping_failed(rt, d, prep, exc)
    if not result.ok:
        return record_failure(rt, d, prep, attempt, result, wire, entry)
    crash_point("after_send_before_commit")
    pipe = rt.redis.pipeline(transaction=True)
    at = queue_delivered(rt, pipe, d, prep, entry, wire, result)
    answers = pipe.execute()
    confirm(rt.redis, rt.settings.redis, rt.settings.key_prefix)  # else the task retries
    return after_delivered(rt, d, answers[at:at + DELIVERED_ANSWERS])


def send_attempt(rt: Runtime, d: Delivery, prep: Prepared,
                 attempt: int) -> tuple[DeliveryResult, bytes | None, dict[str, Any]]:
    """Send. Returns the result, the wire and the attempt's record; raises only MappingError
    (the message cannot be built: see mapping_failed)."""
    started = clock.now()
    try:
        result, wire = send_event(rt.settings, prep.target, prep.event, d, prep.override,
                                  prep.filler)
    except MappingError:
        raise
    except Exception as exc:  # noqa: BLE001 - a bug must not lose the event: retry, then DLQ
        log.exception("transport raised", extra=prep.ctx)
        result, wire = DeliveryResult(ok=False, transient=True,
                                      detail=f"internal error: {exc.__class__.__name__}"), None
    duration_ms = round((clock.now() - started) * 1000, 1)
    outcome = "ok" if result.ok else ("transient" if result.transient else "permanent")
    entry = {"n": attempt, "at": started, "duration_ms": duration_ms, "outcome": outcome,
             "ack_code": result.ack_code, "status_code": result.status_code,
             "detail": result.detail, "control_id": d.control_id}
    if result.notes:  # stray ACKs discarded, commit ACKs, protocol errors: ids and codes only
        entry["notes"] = list(result.notes)
    log.info("delivery attempt %s", outcome, extra={**prep.ctx, "attempt": attempt,
                                                  "outcome": outcome, "ack_code": result.ack_code})
    return result, wire, entry


def mapping_failed(rt: Runtime, d: Delivery, prep: Prepared, exc: MappingError) -> str:
    return _dead(rt, d, "mapping", _code(str(exc)), "MappingError", str(exc), None, prep.ctx)


def record_failure(rt: Runtime, d: Delivery, prep: Prepared, attempt: int,
                   result: DeliveryResult, wire: bytes | None, entry: dict[str, Any]) -> str:
    """A failed attempt: retry later (returns "retry") or dead-letter it ("done")."""
    ctx, target = prep.ctx, prep.target
    if wire is not None:
        rt.ledger.store_wire(d.id, wire)
    if result.response_excerpt:
        rt.ledger.store_response(d.id, result.response_excerpt)
    rt.metrics.inc("deliveries", d.target, entry["outcome"])
    rt.ledger.record_attempt(d.id, entry)
    if result.transient:
        rt.breaker.failure(d.target)
        age = clock.now() - (d.first_attempt_at or entry["at"])
        if attempt >= target.max_attempts or age >= target.max_age_seconds:
            return _dead(rt, d, "delivery", "retries_exhausted", "RetriesExhausted",
                         f"gave up after {attempt} attempts over {age:.0f}s; last: {result.detail}",
                         wire, ctx)
        rt.metrics.inc("retries", d.target)
        delay = backoff_seconds(attempt, rt.settings.delivery, result.retry_after)
        when = clock.now() + delay
        rt.ledger.update_delivery(d.id, state="pending", next_attempt_at=repr(when),
                                  reason=result.detail)
        rt.ledger.schedule(d.appointment_key, d.target, when)
        if delay <= rt.settings.delivery.countdown_max_seconds:
            rt.kick(d.appointment_key, d.target, delay)
        return "retry"
    code = f"ack_{result.ack_code}" if result.ack_code else (
        f"http_{result.status_code}" if result.status_code else "rejected")
    return _dead(rt, d, "delivery", code, "PermanentDeliveryError", result.detail, wire, ctx)


DELIVERED_ANSWERS = COMMIT_ANSWERS + 1  # the commit's, then the breaker's


def queue_delivered(rt: Runtime, pipe: Any, d: Delivery, prep: Prepared, entry: dict[str, Any],
                    wire: bytes | None, result: DeliveryResult) -> int:
    """Everything a delivered message changes, in the caller's MULTI (see
    Ledger.queue_commit). Returns the index of its DELIVERED_ANSWERS answers."""
    received_at = prep.received_at
    latency = None if d.force or not received_at else clock.now() - received_at
    at = rt.ledger.queue_commit(
        pipe, d, entry, wire=wire, response=result.response_excerpt, remote_id=result.remote_id,
        event_hash=rt.store.keys.event(d.event_id),
        dead_letter_index=rt.deadletters.delivery_index(d.id))
    rt.breaker.queue_success(pipe, d.target)  # right after the commit's answers
    # what the EHR holds changes once it has ACKed (a failed send leaves what it made as it was)
    EhrEchoLedger(rt.redis, rt.settings.key_prefix).queue_sent(
        pipe, d.appointment_key, d.target, prep.ehr_state)
    rt.metrics.queue_delivered(pipe, d.target, latency)
    return at


def after_delivered(rt: Runtime, d: Delivery, answers: list[Any]) -> str:
    """The follow-ups of a committed delivery (`answers`: see queue_delivered)."""
    committed = Ledger.committed_from(answers[:COMMIT_ANSWERS])
    if committed.dead_letter_id:  # a replayed dead letter went through (the sweep too, if we die)
        resolve_delivered(rt, committed.dead_letter_id)
    if answers[COMMIT_ANSWERS]:  # this closed the circuit: wake a bounded batch of waiting
        rt.kick_all(rt.ledger.waiters.claim(d.target, WAKE_IN_FLIGHT, clock.now()), d.target)
    return "done"


def _event_for(rt: Runtime, d: Delivery, known: dict[str, Loaded]) -> Loaded:
    """The event to send, and when the bridge received it (0 when unknown)."""
    event, received_at = known.get(d.event_id) or load_event(rt, d.event_id)
    if event.kind is EventKind.NO_SHOW:
        if not d.base_event_id:
            raise MappingError("no earlier booking event to take the no-show's times from")
        base, _ = load_event(rt, d.base_event_id)
        event = base.with_no_show(event)
    return event, received_at


def _code(text: str) -> str:
    words = text.lower()
    if "patient identifier" in words:
        return "missing_patient_id"
    if "date of birth" in words:
        return "invalid_birth_date"
    for code in ("provider", "charset", "event type", "location"):
        if code in words:
            return f"unknown_{code.replace(' ', '_')}" if code != "charset" else "charset"
    return "mapping_failed"


def resolve_delivered(rt: Runtime, dl_id: str) -> None:
    """The delivery of a dead letter went through: resolve it (once) and drop it from the
    set that the commit (`Ledger.queue_commit`) put it in."""
    dl = rt.deadletters.get(dl_id)
    if dl and dl.state in ("open", "replayed"):
        rt.deadletters.set_state(dl.id, "resolved", "system", "delivered")
    rt.redis.srem(rt.ledger.to_resolve, dl_id)


def _finish(rt: Runtime, d: Delivery, state: str, reason: str) -> None:
    rt.ledger.finish_delivery(d, state, reason, event_hash=rt.store.keys.event(d.event_id),
                              dead_letter_index=rt.deadletters.delivery_index(d.id))


def _skip(rt: Runtime, d: Delivery, reason: str, ctx: dict) -> str:
    dl = rt.deadletters.for_delivery(d.id)
    if dl and dl.state in ("open", "replayed"):  # nothing was sent: back in front of a person
        rt.deadletters.set_state(dl.id, "open", "system", "replay skipped", reason=reason)
    _finish(rt, d, "skipped", reason)
    rt.audit.record("system", "delivery.skipped", d.id, reason=reason)
    log.info("delivery skipped: %s", reason, extra=ctx)
    return "done"


def _dead(rt: Runtime, d: Delivery, stage: str, code: str, cls: str, text: str,
          wire: bytes | None, ctx: dict) -> str:
    fresh = rt.ledger.get_delivery(d.id)
    existing = rt.deadletters.for_delivery(d.id)
    if wire is None:
        wire = rt.ledger.wire(d.id)
    if existing and existing.state in ("open", "replayed"):
        rt.deadletters.note(existing.id, "system", "failed again", error_code=code)
        rt.deadletters.set_state(existing.id, "open", "system", "reopened", error_code=code)
        dl_id = existing.id
    else:
        dl_id = rt.deadletters.add(
            stage=stage, error_code=code, error_class=cls, error_text=text, target=d.target,
            appointment_key=d.appointment_key, event_id=d.event_id, delivery_id=d.id,
            attempts=fresh.history if fresh else [], wire=wire, message_event=d.message_event)
    rt.metrics.inc("dead_letters", stage, code)
    _finish(rt, d, "dead", code)  # a crash before this retries; the dead letter is reopened
    log.warning("dead-lettered at %s: %s", stage, code, extra={**ctx, "dead_letter_id": dl_id})
    return "done"
