"""The story of one dead letter: received, mapped, each attempt, and what people did since."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.deadletters import DeadLetter
from core.deliveries import Delivery
from core.redact import redact_text
from core.runtime import Runtime

ACTION_TITLES = {
    "created": "Dead-lettered", "replay": "Replayed", "reveal": "Wire message revealed",
    "edit": "Wire message edited", "discard": "Discarded", "delivered": "Resolved: delivered",
    "reopened": "Reopened", "failed again": "Failed again",
}


@dataclass(frozen=True)
class TimelineEntry:
    at: float
    kind: str  # received | mapped | attempt | action
    title: str
    detail: str
    tone: str  # ok | fail | warn | info


def event_facts(rt: Runtime, event_id: str) -> dict[str, str]:
    """Plain (unencrypted) facts of a stored event: never the body."""
    if not event_id:
        return {}
    names = ("received_at", "trigger", "source", "state", "reason")
    values = rt.redis.hmget(rt.store.keys.event(event_id), names)
    return {n: v.decode() for n, v in zip(names, values, strict=True) if v is not None}


def attempt_entry(a: dict[str, Any], reveal: bool) -> TimelineEntry:
    if a.get("ack_code"):
        answer = f"ACK {a['ack_code']}"
    elif a.get("status_code"):
        answer = f"HTTP {a['status_code']}"
    else:
        answer = str(a.get("outcome") or "no answer")
    detail = str(a.get("detail") or "")
    parts = [f"{a.get('duration_ms', '?')} ms", f"outcome {a.get('outcome', '?')}"]
    if a.get("control_id"):
        parts.append(f"MSH-10 {a['control_id']}")
    if detail:
        parts.append(detail if reveal else redact_text(detail))
    tone = {"ok": "ok", "transient": "warn"}.get(str(a.get("outcome")), "fail")
    return TimelineEntry(float(a.get("at") or 0), "attempt", f"Attempt {a.get('n', '?')}: {answer}",
                         " · ".join(parts), tone)


def build_timeline(d: DeadLetter, delivery: Delivery | None, facts: dict[str, str],
                   reveal: bool = False) -> list[TimelineEntry]:
    """`facts`: the event's `event_facts`, read once by the caller (the page shows them too)."""
    entries: list[TimelineEntry] = []
    if facts.get("received_at"):
        entries.append(TimelineEntry(float(facts["received_at"]), "received",
                                     f"Received {facts.get('trigger', 'event')}",
                                     f"event {d.event_id} from {facts.get('source', '?')}", "info"))
    if delivery is not None:
        entries.append(TimelineEntry(
            delivery.created_at, "mapped", f"Mapped to {delivery.message_event or '?'} for "
            f"{delivery.target}", f"delivery {delivery.id}, order {delivery.order}, "
            f"MSH-10 {delivery.control_id}", "info"))
    attempts = delivery.history if delivery is not None and delivery.history else d.attempts
    entries += [attempt_entry(a, reveal) for a in attempts]
    for a in d.audit:
        action = str(a.get("action", ""))
        details = a.get("details") or {}
        if action == "created":
            text = f"stage {details.get('stage', d.stage)}, code {details.get('error_code', '')}"
        else:
            text = ", ".join(f"{k} {v}" for k, v in details.items())
        tone = "fail" if action in ("created", "failed again", "reopened") else (
            "ok" if action == "delivered" else "info")
        title = ACTION_TITLES.get(action, action.capitalize())
        entries.append(TimelineEntry(float(a.get("ts") or 0), "action",
                                     f"{title} by {a.get('actor', '?')}", text, tone))
    return sorted(entries, key=lambda e: e.at)
