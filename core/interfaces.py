"""Small interfaces the services implement and the composition root wires (calehr/wiring.py).

The web app and the MLLP listener hand what the EHR says to the worker's services through these,
so `webhooks` and `adapters` never import `worker`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import redis

from core.blocks import BlockChange
from core.config import Settings, TargetSettings
from core.crypto import Cipher
from core.ehr_echo import Filler

# the Celery queue every task goes through (the worker consumes it, `calehr status` counts it)
TASK_QUEUE = "calehr"

# event id -> queued for processing (the Celery message carries the id only)
Enqueue = Callable[[str], None]


@dataclass(frozen=True)
class EhrReport:
    """What the EHR says about one appointment, whichever protocol it used."""

    event: str  # S12..S26 (FHIR is mapped to these)
    start: datetime | None
    end: datetime | None
    status: str = ""
    reason: str = ""  # free text from the EHR: goes to Cal.com, never to logs
    filler: Filler | None = None
    origin: str = ""  # hl7:S13, fhir:Appointment


@dataclass(frozen=True)
class Applied:
    """What applying one busy-block change did."""

    outcome: str  # blocked | moved | unchanged | released | nothing
    providers: tuple[str, ...] = ()
    conflicts: int = 0
    api_pending: bool = False


class BusyBlocks(Protocol):
    """Applies the EHR's busy time (worker.blocking.BlockingService)."""

    def apply(self, change: BlockChange) -> Applied: ...

    def sync_now(self, members: list[str]) -> int: ...


class EhrChanges(Protocol):
    """Our own appointments when the EHR speaks of them (worker.ehr_changes.OwnAppointments)."""

    def handle(self, key: str, target: TargetSettings | None, report: EhrReport) -> str: ...

    def run_pending(self, now: float | None = None, limit: int = 100) -> int: ...


# (settings, redis, cipher) -> the two services that act on what the EHR says
EhrServices = Callable[[Settings, redis.Redis, Cipher], tuple[BusyBlocks, EhrChanges]]
