"""An EHR-side change to a Cal.com booking, and the rules that say which action it asks of
Cal.com and whether Cal.com shows it already (worker/ehr_changes.py applies them)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from core.ehr_echo import fingerprint
from core.models import AppointmentEvent

CANCELLED_STATUSES = ("cancelled", "rejected")


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


def action_for(event: str, state: str) -> str | None:
    if state == "cancelled":
        return "cancel"
    if state == "noshow":
        return "no_show"
    if event == "S13" and state.startswith("booked|"):
        return "reschedule"
    return None  # S12/S14 and the rest: the echo, or nothing Cal.com needs


def calcom_has(last: AppointmentEvent, base: AppointmentEvent, status: bytes | None,
                state: str) -> bool:
    """Cal.com already shows what the EHR reports (e.g. both sides cancelled)."""
    current = status.decode() if status else ""
    if state == "cancelled":
        return current in CANCELLED_STATUSES
    if state == "noshow":
        return current == "no_show" and bool(last.no_show)
    return state == fingerprint("S13", base.start, base.end)


def state_after(change: EhrChange) -> str:
    """The EHR state a change leaves Cal.com in (what Cal.com's webhook will say)."""
    if change.action == "reschedule":
        return fingerprint("S13", parse_iso(change.start), parse_iso(change.end))
    return "cancelled" if change.action == "cancel" else "noshow"


def iso_utc(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if value else ""


def parse_iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
