"""A delivery: one event's message to one target, as the ledger records it."""

from __future__ import annotations

import hashlib
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
