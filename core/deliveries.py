"""A delivery: one event's message to one target, as the ledger records it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any


def control_id_for(delivery_id: str) -> str:
    """MSH-10: 20 characters, derived from the delivery, so every retry sends the same one."""
    return hashlib.sha256(delivery_id.encode()).hexdigest()[:20].upper()


@dataclass
class Delivery:
    id: str
    event_id: str
    appointment_key: str
    target: str
    message_event: str
    order: int
    control_id: str
    state: str  # pending | sending | delivered | skipped | dead
    attempts: int = 0
    created_at: float = 0.0
    first_attempt_at: float = 0.0
    next_attempt_at: float = 0.0
    updated_at: float = 0.0
    base_event_id: str = ""  # for no-show: the event that carries the times
    force: bool = False
    reason: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)
    has_override: bool = False  # an operator's edited message waits to be sent

    @classmethod
    def from_record(cls, delivery_id: str, data: dict[bytes, bytes],
                    attempts: list[bytes]) -> Delivery | None:
        """The ledger's hash and attempt list of a delivery (None: no such record)."""
        if not data or b"event_id" not in data:
            return None
        s = {k.decode(): v.decode() for k, v in data.items()
             if k not in (b"wire", b"response", b"override")}
        return cls(
            id=delivery_id, event_id=s["event_id"], appointment_key=s["appointment_key"],
            target=s["target"], message_event=s["message_event"], order=int(s["order"]),
            control_id=s["control_id"], state=s["state"], attempts=int(s["attempts"]),
            created_at=float(s["created_at"]), first_attempt_at=float(s["first_attempt_at"]),
            next_attempt_at=float(s["next_attempt_at"]), updated_at=float(s["updated_at"]),
            base_event_id=s.get("base_event_id", ""), force=s.get("force") == "1",
            reason=s.get("reason", ""), history=[json.loads(h) for h in attempts],
            has_override=b"override" in data,
        )
