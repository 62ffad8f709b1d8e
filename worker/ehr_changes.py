"""Our own appointments when the EHR speaks of them: echoes, filler ids, EHR-side changes.

An inbound SIU (or FHIR Appointment) about a Cal.com booking — its placer id is in our namespace,
or its filler id is one the bridge recorded — is never a busy block and never a conflict:
- S12/S14 and anything that only repeats what the EHR has from us: the echo. Its filler id
  (SCH-2) is recorded per target and sent in SCH-2 from then on.
- S13 (moved), S15/S17 (cancelled), S26 (no-show) that Cal.com does not have yet: a change the
  EHR made. It is recorded; with `calcom.api_key` the bridge makes the same change in Cal.com
  (API v2) so Cal.com tells the patient; without one it becomes an `ehr_change` dead letter: an
  "action needed" item that says what the EHR did and what to do in Cal.com. The EHR's state is
  kept (core/ehr_echo.py), so the webhook Cal.com sends back is not sent to that EHR again.
- An S13/S15/S26 naming a state we sent minutes before a newer one may be a late echo or the
  clinic changing it back: an action item, never dropped. An S14 with other times: an action item.
- An appointment's changes reach Cal.com one at a time, in order, each aimed at the newest
  booking uid (a reschedule's new uid is recorded from Cal.com's answer).
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import asdict

import redis

from adapters.calcom.actions import BookingActions
from adapters.calcom.http import CalcomApiError
from adapters.calcom.payload import normalise, parse_body
from core import clock
from core.audit import AuditLog
from core.config import Settings, TargetSettings
from core.crypto import Cipher, DecryptError
from core.deadletters import DeadLetterStore
from core.ehr_echo import EhrEchoLedger, fingerprint
from core.errors import PayloadError
from core.interfaces import EhrReport
from core.ledger import Ledger
from core.models import AppointmentEvent
from core.replication import confirm
from core.store import EventStore
from worker.ehr_change_rules import (
    CANCELLED_STATUSES,
    EhrChange,
    action_for,
    calcom_has,
    iso_utc,
    parse_iso,
    state_after,
)

log = logging.getLogger(__name__)
PLACER_NAMESPACE = "CALCOM"  # SCH-1.2 of every SIU the bridge sends (SiuProfile)
MAX_API_ATTEMPTS = 8
CHANGE_TTL_SECONDS = 90 * 86400
WHAT_THE_EHR_DID = {"reschedule": "moved", "cancel": "cancelled", "no_show": "marked as no-show"}


class OwnAppointments:
    def __init__(self, settings: Settings, client: redis.Redis, cipher: Cipher) -> None:
        p = settings.key_prefix
        self.settings = settings
        self.r = client
        self.p = p
        self.cipher = cipher
        self.echoes = EhrEchoLedger(client, p)
        self.ledger = Ledger(client, cipher, p)
        self.store = EventStore(client, cipher, p)
        self.deadletters = DeadLetterStore(client, cipher, p)
        self.audit = AuditLog(client, p)
        # (lock, token) a failover kept us from releasing; release() forgets the token first
        self._unreleased: list[tuple[redis.lock.Lock, bytes]] = []

    @property
    def pending_key(self) -> str:
        return f"{self.p}:ehr-changes:pending"

    def _change_key(self, change_id: str) -> str:
        return f"{self.p}:ehr-change:{change_id}"

    # recognising ------------------------------------------------------------------------------
    def key_for(self, placer_id: str, placer_namespace: str, filler_id: str,
                target: TargetSettings | None) -> str | None:
        """The appointment key when the EHR speaks of one of ours, else None."""
        if placer_id and placer_namespace.upper() == PLACER_NAMESPACE:
            return placer_id
        if filler_id and target is not None:
            return self.echoes.key_for_filler(target.name, filler_id)
        return None

    # acting -------------------------------------------------------------------------------------
    def handle(self, key: str, target: TargetSettings | None, report: EhrReport) -> str:
        """Record what the EHR said about our appointment `key`. Returns an outcome code."""
        ctx = {"appointment_key": key, "target": target.name if target else "",
               "origin": report.origin}
        if target is None:
            log.warning("own appointment from an EHR that matches no target", extra=ctx)
            return "own:unknown_target"
        if report.filler and report.filler.id and \
                self.echoes.record_filler(key, target.name, report.filler):
            log.info("filler id recorded", extra=ctx)
        state = fingerprint(report.event, report.start, report.end, report.status)
        action = action_for(report.event, state)
        if action is None and not (report.event == "S14" and state.startswith("booked|")):
            return "own:echo"  # S12 and the rest: the echo, or nothing Cal.com needs
        echo = self.echoes.echo_of(key, target.name, state, target.ehr_echoes)
        if echo == "current" or (echo == "recent" and action is None):
            log.info("echo of our own message", extra={**ctx, "outcome": "echo"})
            return "own:echo"
        booking = self._booking(key)
        if booking is None:
            log.warning("EHR change for an appointment the ledger does not know", extra=ctx)
            return "own:unknown_appointment"
        last, base = booking
        if calcom_has(last, base, self.r.hget(self.ledger.appt(key), "status"), state):
            self.echoes.reported(key, target.name, state)
            return "own:same"
        change = EhrChange(
            id="ehc_" + uuid.uuid4().hex[:16], appointment_key=key, target=target.name,
            action=action or "reschedule", booking_uid=self._latest_uid(key, base.uid),
            origin=report.origin,
            start=iso_utc(report.start) if state.startswith("booked|") else "",
            end=iso_utc(report.end) if state.startswith("booked|") else "")
        self._save(change, reason=report.reason, email=base.attendee.email)
        self.audit.record("system", "ehr_change.recorded", change.id, appointment_key=key,
                          target=target.name, change=change.action, origin=report.origin)
        if echo == "recent":  # never silent: a person looks at what the EHR shows
            self._action_needed(change, "ehr_change_unclear",
                                "the bridge sent the EHR this very state minutes before a newer "
                                "one, so this may be a late echo of that message rather than a "
                                "change; check the EHR before changing Cal.com")
            return "own:action_needed"
        # "the EHR has this state" is written with what acts on it (after it, or in one MULTI):
        # a failover that keeps only a prefix of these writes must not turn the EHR's resend
        # into an echo of a change that was lost
        if action is None:  # an S14 carrying other times than Cal.com's
            self._action_needed(change, "ehr_times_differ",
                                "the EHR sent other times in a modification (S14), which the "
                                "bridge does not apply to Cal.com by itself")
            self.echoes.reported(key, target.name, state)
            return "own:action_needed"
        if not self.settings.calcom.api_key:
            self._action_needed(change, "no_api_key",
                                "the bridge has no Cal.com API key (calcom.api_key)")
            self.echoes.reported(key, target.name, state)
            return "own:action_needed"
        self._queue(change, state)
        log.info("EHR change queued for Cal.com", extra={**ctx, "outcome": action})
        return f"own:{action}_queued"

    def _queue(self, change: EhrChange, state: str) -> None:
        """Due now, and behind the appointment's earlier changes: they go to Cal.com in order.
        The EHR's `state` is recorded in the same MULTI (replicated whole or not at all)."""
        order = self.r.incr(f"{self.p}:ehr-changes:counter")
        queue = self._appt_queue(change.appointment_key)
        pipe = self.r.pipeline(transaction=True)
        self.echoes.reported(change.appointment_key, change.target, state, pipe)
        pipe.zadd(queue, {change.id: order})
        pipe.expire(queue, CHANGE_TTL_SECONDS)
        pipe.zadd(self.pending_key, {change.id: clock.now()})
        pipe.execute()

    def _appt_queue(self, key: str) -> str:
        return f"{self.p}:ehr-changes:appt:{key}"

    def run_pending(self, now: float | None = None, limit: int = 100) -> int:
        """Make the queued changes in Cal.com. Returns how many were due."""
        now = clock.now() if now is None else now
        held, self._unreleased = self._unreleased, []
        for lock, token in held:  # else its appointment waits for the lock to expire (120 s)
            self._release(lock, token)
        due = self.r.zrangebyscore(self.pending_key, "-inf", now, start=0, num=limit)
        if not due:
            return 0
        api = BookingActions(self.settings.calcom)
        for raw_id in due:
            self._apply(api, raw_id.decode(), now)
        return len(due)

    def _apply(self, api: BookingActions, change_id: str, now: float | None = None) -> None:
        """One change, under its appointment's lock: several runners (the MLLP sync loop, the
        beat sweep, FHIR inbound) may hold a stale due list; only one applies, once."""
        loaded = self._load(change_id)
        if loaded is None:
            self.r.zrem(self.pending_key, change_id)
            return
        lock = self.r.lock(f"{self.p}:lock:ehr-change-appt:{loaded[0].appointment_key}",
                           timeout=120, blocking=False, thread_local=False)
        if not lock.acquire():
            return
        token = lock.local.token
        try:
            self._apply_locked(api, change_id, clock.now() if now is None else now)
        finally:
            self._release(lock, token)

    def _release(self, lock: redis.lock.Lock, token: bytes) -> None:
        try:
            lock.do_release(token)
        except redis.exceptions.LockError:  # expired: nothing to release
            pass
        except redis.RedisError:  # Redis away (a failover): released on the next run
            self._unreleased.append((lock, token))

    def _apply_locked(self, api: BookingActions, change_id: str, now: float) -> None:
        loaded = self._load(change_id)  # read again under the lock
        score = self.r.zscore(self.pending_key, change_id)
        if loaded is None or loaded[0].state != "pending" or score is None or score > now:
            return  # another runner applied it, or put it back for later
        change, reason, email = loaded
        if self._first_waiting(change.appointment_key) not in (None, change.id):
            return  # an earlier change of this appointment goes first
        ctx = {"appointment_key": change.appointment_key, "target": change.target,
               "origin": change.origin}
        retry = change.attempts > 0
        if not retry:  # a retry asks about the booking its first try was sent to
            change.booking_uid = self._latest_uid(change.appointment_key, change.booking_uid)
        change.attempts += 1
        # the try is recorded (and on a replica) before Cal.com is asked: after a failover that
        # loses what followed the POST, the change is a retry that asks Cal.com first, and
        # is not POSTed twice. Not confirmed: no POST; the change stays due (a RedisError).
        self._update(change)
        confirm(self.r, self.settings.redis, self.p)
        try:
            made = self._already_made(api, change, email) if retry else None
            if made is not None:
                log.info("an earlier try had reached Cal.com", extra=ctx)
                uid = made
            elif change.action == "reschedule":
                uid = api.reschedule(change.booking_uid, parse_iso(change.start),
                                     reason or "Moved in the hospital's system")
            elif change.action == "cancel":
                api.cancel(change.booking_uid, reason or "Cancelled in the hospital's system")
                uid = change.booking_uid
            else:
                api.mark_absent(change.booking_uid, email)
                uid = change.booking_uid
        except CalcomApiError as exc:
            if exc.transient and change.attempts < MAX_API_ATTEMPTS:
                wait = exc.retry_after or min(600.0, 5.0 * 2 ** change.attempts)
                self._update(change)
                self.r.zadd(self.pending_key, {change.id: clock.now() + wait})
                log.warning("Cal.com change failed, will retry: %s", exc, extra=ctx)
                return
            self._action_needed(change, "calcom_api_failed",
                                f"Cal.com did not take the change ({exc}) after "
                                f"{change.attempts} attempt(s)")
            self._done(change)
            return
        if change.action == "reschedule" and uid != change.booking_uid:
            self._moved(change.appointment_key, change.booking_uid, uid)
        self.echoes.made_in_calcom(change.appointment_key, change.target, state_after(change), uid)
        change.state = "applied"
        self._update(change)
        self._done(change)
        self.audit.record("system", "ehr_change.applied", change.id,
                          appointment_key=change.appointment_key, change=change.action)
        log.info("EHR change made in Cal.com",
                 extra={**ctx, "outcome": change.action, "booking_uid": uid})

    def _already_made(self, api: BookingActions, change: EhrChange, email: str) -> str | None:
        """The booking uid when Cal.com already shows the change (an earlier try that timed out
        had reached it), else None."""
        booking = api.get(change.booking_uid)
        status = str(booking.get("status", "")).lower()
        if change.action == "cancel":
            return change.booking_uid if status in CANCELLED_STATUSES else None
        if change.action == "no_show":
            people = booking.get("attendees")
            absent = isinstance(people, list) and any(
                isinstance(p, dict) and p.get("email") == email and p.get("absent") is True
                for p in people)
            return change.booking_uid if absent else None
        moved_to = booking.get("rescheduledToUid")
        if not isinstance(moved_to, str) or not moved_to:
            return None
        start = api.get(moved_to).get("start")
        try:
            same = isinstance(start, str) and iso_utc(parse_iso(start)) == change.start
        except ValueError:  # not a date: not the booking we asked for
            same = False
        return moved_to if same else None

    def _done(self, change: EhrChange) -> None:
        pipe = self.r.pipeline(transaction=True)
        pipe.zrem(self.pending_key, change.id)
        pipe.zrem(self._appt_queue(change.appointment_key), change.id)
        pipe.execute()

    def _first_waiting(self, key: str) -> str | None:
        """The appointment's earliest change still waiting (records gone by TTL are dropped)."""
        queue = self._appt_queue(key)
        for _ in range(100):  # bounded
            head = self.r.zrange(queue, 0, 0)
            if not head:
                return None
            change = self.get(head[0].decode())
            if change is not None and change.state == "pending":
                return change.id
            self.r.zrem(queue, head[0])
        return None

    def _moved(self, key: str, old_uid: str, new_uid: str) -> None:
        """Cal.com made `new_uid` for our reschedule: the ledger knows it before its webhook
        comes, so the appointment's next EHR change goes to it, not to the cancelled one."""
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(self.ledger.appt(key) + ":ehr-moved", old_uid, new_uid)
        pipe.sadd(self.ledger.appt(key) + ":uids", new_uid)
        pipe.set(self.ledger.uid_key(new_uid), key)
        pipe.execute()

    def _latest_uid(self, key: str, uid: str) -> str:
        """`uid`, followed through the reschedules the bridge made for the EHR."""
        moved = self.ledger.appt(key) + ":ehr-moved"
        for _ in range(50):  # bounded: a cycle cannot hang us
            nxt = self.r.hget(moved, uid)
            if not nxt:
                break
            uid = nxt.decode()
        return uid

    # records --------------------------------------------------------------------------------
    def _save(self, change: EhrChange, *, reason: str, email: str) -> None:
        secret = self.cipher.encrypt(json.dumps({"reason": reason, "email": email}).encode())
        self.r.hset(self._change_key(change.id), mapping={
            "change": json.dumps(asdict(change)), "secret": secret})
        self.r.expire(self._change_key(change.id), CHANGE_TTL_SECONDS)

    def _update(self, change: EhrChange) -> None:
        self.r.hset(self._change_key(change.id), "change", json.dumps(asdict(change)))

    def _load(self, change_id: str) -> tuple[EhrChange, str, str] | None:
        raw = self.r.hmget(self._change_key(change_id), "change", "secret")
        if not raw[0]:
            return None
        secret = json.loads(self.cipher.decrypt(raw[1])) if raw[1] else {}
        return EhrChange(**json.loads(raw[0])), secret.get("reason", ""), secret.get("email", "")

    def get(self, change_id: str) -> EhrChange | None:
        loaded = self._load(change_id)
        return loaded[0] if loaded else None

    def _action_needed(self, change: EhrChange, code: str, why: str) -> str:
        change.state = "action_needed"
        self._update(change)
        did = WHAT_THE_EHR_DID[change.action]
        todo = {"reschedule": f"reschedule booking {change.booking_uid} to {change.start} "
                              f"(ends {change.end})",
                "cancel": f"cancel booking {change.booking_uid}",
                "no_show": f"mark the attendee of booking {change.booking_uid} as no-show"}
        text = (f"The EHR ({change.target}) {did} appointment {change.appointment_key} "
                f"({change.origin}). Action needed in Cal.com: {todo[change.action]}, so the "
                f"patient is told. Why not done automatically: {why}. Resolve this item when done.")
        dl_id = self.deadletters.add(
            stage="ehr_change", error_code=code, error_class="EhrSideChange", error_text=text,
            target=change.target, appointment_key=change.appointment_key,
            message_event=change.origin.partition(":")[2])
        log.warning("EHR change needs a person in Cal.com: %s", code,
                    extra={"dead_letter_id": dl_id, "appointment_key": change.appointment_key,
                           "target": change.target})
        return dl_id

    def _booking(self, key: str) -> tuple[AppointmentEvent, AppointmentEvent] | None:
        """The appointment's last event and its last booking event (the one with its uid, times
        and attendee: a no-show event carries none of them), or None."""
        appt = self.r.hmget(self.ledger.appt(key), "last_event_id", "booking_event_id")
        ids = [v.decode() for v in appt if v]
        if not ids:
            return None
        last = self._event(key, ids[0])
        base = self._event(key, ids[-1]) if len(ids) > 1 and ids[1] != ids[0] else last
        if last is None or base is None:
            return None
        return last, base

    def _event(self, key: str, event_id: str) -> AppointmentEvent | None:
        try:
            stored = self.store.get(event_id)
            if stored is None:
                return None
            return normalise(event_id, parse_body(stored.body), self.ledger.resolve)
        except (DecryptError, PayloadError) as exc:  # retention or a bad body: nothing to act on
            log.warning("an event of an appointment is unreadable: %s", exc.__class__.__name__,
                        extra={"appointment_key": key})
            return None
