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
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import redis

from adapters.calcom.actions import BookingActions
from adapters.calcom.http import CalcomApiError
from adapters.calcom.payload import normalise, parse_body
from core.audit import AuditLog
from core.config import Settings, TargetSettings
from core.crypto import Cipher, DecryptError
from core.deadletters import DeadLetterStore
from core.ehr_echo import EhrEchoLedger, fingerprint
from core.errors import PayloadError
from core.interfaces import EhrReport
from core.ledger import Ledger
from core.models import AppointmentEvent
from core.store import EventStore

log = logging.getLogger(__name__)
PLACER_NAMESPACE = "CALCOM"  # SCH-1.2 of every SIU the bridge sends (SiuProfile)
CANCELLED_STATUSES = ("cancelled", "rejected")
MAX_API_ATTEMPTS = 8
WHAT_THE_EHR_DID = {"reschedule": "moved", "cancel": "cancelled", "no_show": "marked as no-show"}


@dataclass
class EhrChange:
    id: str
    appointment_key: str
    target: str
    action: str  # reschedule | cancel | no_show
    booking_uid: str
    origin: str
    start: str = ""  # UTC ISO, reschedule only
    end: str = ""
    attempts: int = 0
    state: str = "pending"  # pending | applied | action_needed


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
        action = _action(report.event, state)
        if action is None:
            return "own:echo"
        if self.echoes.is_echo(key, target.name, state, target.ehr_echoes):
            log.info("echo of our own message", extra={**ctx, "outcome": "echo"})
            return "own:echo"
        last = self._last_event(key)
        if last is None:
            log.warning("EHR change for an appointment the ledger does not know", extra=ctx)
            return "own:unknown_appointment"
        if _calcom_has(last, self.r.hget(self.ledger.appt(key), "status"), state):
            self.echoes.reported(key, target.name, state)
            return "own:same"
        self.echoes.reported(key, target.name, state)
        change = EhrChange(
            id="ehc_" + uuid.uuid4().hex[:16], appointment_key=key, target=target.name,
            action=action, booking_uid=last.uid, origin=report.origin,
            start=_iso(report.start) if action == "reschedule" else "",
            end=_iso(report.end) if action == "reschedule" else "")
        self._save(change, reason=report.reason, email=last.attendee.email)
        self.audit.record("system", "ehr_change.recorded", change.id, appointment_key=key,
                          target=target.name, change=action, origin=report.origin)
        if not self.settings.calcom.api_key:
            self._action_needed(change, "no_api_key",
                                "the bridge has no Cal.com API key (calcom.api_key)")
            return "own:action_needed"
        self.r.zadd(self.pending_key, {change.id: time.time()})
        log.info("EHR change queued for Cal.com", extra={**ctx, "outcome": action})
        return f"own:{action}_queued"

    def run_pending(self, now: float | None = None, limit: int = 100) -> int:
        """Make the queued changes in Cal.com. Returns how many were tried."""
        now = time.time() if now is None else now
        due = self.r.zrangebyscore(self.pending_key, "-inf", now, start=0, num=limit)
        if not due:
            return 0
        api = BookingActions(self.settings.calcom)
        for raw_id in due:
            change_id = raw_id.decode()
            lock = self.r.lock(f"{self.p}:lock:ehr-change:{change_id}", timeout=60,
                               blocking=False)
            if not lock.acquire():
                continue
            try:
                self._apply(api, change_id)
            finally:
                lock.release()
        return len(due)

    def _apply(self, api: BookingActions, change_id: str) -> None:
        loaded = self._load(change_id)
        if loaded is None:
            self.r.zrem(self.pending_key, change_id)
            return
        change, reason, email = loaded
        ctx = {"appointment_key": change.appointment_key, "target": change.target,
               "origin": change.origin}
        change.attempts += 1
        try:
            if change.action == "reschedule":
                new_uid = api.reschedule(change.booking_uid, _parse(change.start),
                                         reason or "Moved in the hospital's system")
                ctx["booking_uid"] = new_uid
            elif change.action == "cancel":
                api.cancel(change.booking_uid, reason or "Cancelled in the hospital's system")
            else:
                api.mark_absent(change.booking_uid, email)
        except CalcomApiError as exc:
            if exc.transient and change.attempts < MAX_API_ATTEMPTS:
                wait = exc.retry_after or min(600.0, 5.0 * 2 ** change.attempts)
                self._update(change)
                self.r.zadd(self.pending_key, {change.id: time.time() + wait})
                log.warning("Cal.com change failed, will retry: %s", exc, extra=ctx)
                return
            self._action_needed(change, "calcom_api_failed",
                                f"Cal.com did not take the change ({exc}) after "
                                f"{change.attempts} attempt(s)")
            self.r.zrem(self.pending_key, change.id)
            return
        change.state = "applied"
        self._update(change)
        self.r.zrem(self.pending_key, change.id)
        self.audit.record("system", "ehr_change.applied", change.id,
                          appointment_key=change.appointment_key, change=change.action)
        log.info("EHR change made in Cal.com", extra={**ctx, "outcome": change.action})

    # records --------------------------------------------------------------------------------
    def _save(self, change: EhrChange, *, reason: str, email: str) -> None:
        secret = self.cipher.encrypt(json.dumps({"reason": reason, "email": email}).encode())
        self.r.hset(self._change_key(change.id), mapping={
            "change": json.dumps(asdict(change)), "secret": secret})
        self.r.expire(self._change_key(change.id), 90 * 86400)

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

    def _last_event(self, key: str) -> AppointmentEvent | None:
        event_id = self.r.hget(self.ledger.appt(key), "last_event_id")
        if not event_id:
            return None
        try:
            stored = self.store.get(event_id.decode())
            if stored is None:
                return None
            return normalise(event_id.decode(), parse_body(stored.body), self.ledger.resolve)
        except (DecryptError, PayloadError) as exc:  # retention or a bad body: nothing to act on
            log.warning("last event of an appointment unreadable: %s", exc.__class__.__name__,
                        extra={"appointment_key": key})
            return None


def _action(event: str, state: str) -> str | None:
    if state == "cancelled":
        return "cancel"
    if state == "noshow":
        return "no_show"
    if event == "S13" and state.startswith("booked|"):
        return "reschedule"
    return None  # S12/S14 and the rest: the echo, or nothing Cal.com needs


def _calcom_has(last: AppointmentEvent, status: bytes | None, state: str) -> bool:
    """Cal.com already shows what the EHR reports (e.g. both sides cancelled)."""
    current = status.decode() if status else ""
    if state == "cancelled":
        return current in CANCELLED_STATUSES
    if state == "noshow":
        return current == "no_show" and bool(last.no_show)
    return state == fingerprint("S13", last.start, last.end)


def _iso(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if value else ""


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
