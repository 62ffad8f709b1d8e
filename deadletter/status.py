"""Is the bridge healthy, and if not, where: one read of Redis (and the local spool).

Used by `calehr status [--json]` and the console's status page. Ids, counts and times only.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis

from core import clock
from core.config import Settings
from core.crypto import Cipher
from core.deadletters import DeadLetterStore
from core.heartbeat import COMPONENTS, TTL_SECONDS, read_beats
from core.interfaces import TASK_QUEUE as QUEUE
from core.ledger import Ledger
from core.metrics import Metrics
from core.redis_client import Keys, make_redis
from core.retry import CircuitBreaker
from core.spool import IngestSpool

MAX_QUEUES_SAMPLED = 2000  # oldest-undelivered looks at this many appointment queues at most


@dataclass
class Component:
    name: str
    up: bool
    detail: str
    processes: int = 0


@dataclass
class TargetStatus:
    name: str
    kind: str
    circuit: str  # closed | open | half-open
    consecutive_failures: int
    queue_depth: int  # deliveries waiting for this target
    last_success_at: float | None
    last_error_at: float | None
    last_error: str


@dataclass
class Status:
    checked_at: float
    healthy: bool
    problems: list[str]
    components: list[Component]
    targets: list[TargetStatus] = field(default_factory=list)
    dead_letters_open: dict[str, int] = field(default_factory=dict)
    task_queue_depth: int = 0
    reconciliation: dict[str, Any] = field(default_factory=dict)
    oldest_undelivered_seconds: float | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _spool(settings: Settings) -> Component:
    if not settings.spool.enabled:
        return Component("spool", True, "off")
    folder = Path(settings.spool.path or Path(settings.var_dir) / "spool")
    if not folder.is_dir():
        return Component("spool", True, f"{folder} not created yet (nothing spooled)")
    spool = IngestSpool(folder, Cipher(settings.security.encryption_keys), settings.spool.max_bytes)
    size = spool.size()
    if spool.full:
        return Component("spool", False, f"full: {size} of {settings.spool.max_bytes} bytes; "
                                         "webhooks get 503 until Redis is back and it drains")
    detail = "empty" if size == 0 else f"{size} bytes waiting for Redis"
    return Component("spool", True, f"{detail} ({folder})")


def _pending_queues(ledger: Ledger) -> list[tuple[str, str]]:
    """(appointment key, target) of every queue with deliveries waiting."""
    members = (m.decode() for m in ledger.r.sscan_iter(ledger.pending_index, count=500))
    return [tuple(m.rsplit("|", 1)) for m in members if "|" in m]  # type: ignore[misc]


def _oldest_undelivered(ledger: Ledger, queues: list[tuple[str, str]], now: float) -> float | None:
    r = ledger.r
    times: list[float] = []
    first = r.zrange(Keys(ledger.p).unprocessed, 0, 0, withscores=True)
    if first:
        times.append(float(first[0][1]))
    pipe = r.pipeline(transaction=False)
    for key, target in queues[:MAX_QUEUES_SAMPLED]:
        pipe.zrange(ledger.pending(key, target), 0, 0)
    heads = [h[0].decode() for h in pipe.execute() if h] if queues else []
    pipe = r.pipeline(transaction=False)
    for delivery_id in heads:
        pipe.hget(ledger.delivery_key(delivery_id), "created_at")
    times += [float(t) for t in (pipe.execute() if heads else []) if t]
    return round(now - min(times), 1) if times else None


def _queue_depths(ledger: Ledger, queues: list[tuple[str, str]]) -> dict[str, int]:
    pipe = ledger.r.pipeline(transaction=False)
    for key, target in queues:
        pipe.zcard(ledger.pending(key, target))
    depths: dict[str, int] = {}
    for (_key, target), n in zip(queues, pipe.execute() if queues else [], strict=True):
        depths[target] = depths.get(target, 0) + int(n)
    return depths


def collect(settings: Settings, client: redis.Redis | None = None) -> Status:
    now = clock.now()
    spool = _spool(settings)
    r = client or make_redis(settings)
    try:
        r.ping()
    except redis.RedisError as exc:
        down = [Component("redis", False, f"unreachable: {str(exc).splitlines()[0]}")]
        down += [Component(c, False, "unknown (Redis is down)") for c in COMPONENTS]
        return Status(now, False, ["redis is unreachable"], [*down, spool])
    p = settings.key_prefix
    beats = read_beats(r, p)
    components = [Component("redis", True, "answers")]
    for name in COMPONENTS:
        mine = [b for b in beats if b.component == name]
        if mine:
            newest = max(b.seen_at for b in mine)
            components.append(Component(name, True, f"{len(mine)} process(es), last heartbeat "
                                        f"{max(0.0, now - newest):.0f}s ago", len(mine)))
        else:
            components.append(Component(name, False, f"no heartbeat in the last {TTL_SECONDS}s"))
    components.append(spool)

    breaker = CircuitBreaker(r, settings.delivery, p)
    metrics = Metrics(r, p)
    cipher = Cipher(settings.security.encryption_keys)
    ledger = Ledger(r, cipher, p)
    queues = _pending_queues(ledger)
    depths = _queue_depths(ledger, queues)
    targets = []
    for t in settings.targets:
        state = breaker.state(t.name)
        last = metrics.last(t.name)
        targets.append(TargetStatus(
            name=t.name, kind=t.kind, circuit=state.state, consecutive_failures=state.failures,
            queue_depth=depths.get(t.name, 0),
            last_success_at=float(last["success_at"]) if "success_at" in last else None,
            last_error_at=float(last["error_at"]) if "error_at" in last else None,
            last_error=last.get("error_outcome", "")))
    dls = DeadLetterStore(r, cipher, p)
    watermark = r.get(f"{p}:reconcile:watermark")
    reconciliation = {
        "enabled": bool(settings.calcom.reconcile_interval_seconds and settings.calcom.api_key),
        "interval_seconds": settings.calcom.reconcile_interval_seconds,
        "watermark": watermark.decode() if watermark else None,
    }
    status = Status(now, True, [], components, targets, dls.counts_by_reason("open"),
                    int(r.llen(QUEUE)), reconciliation,
                    _oldest_undelivered(ledger, queues, now))
    status.problems = _problems(status, settings)
    status.healthy = not status.problems
    return status


def _problems(s: Status, settings: Settings) -> list[str]:
    problems = [f"{c.name} is down ({c.detail})" for c in s.components if not c.up]
    for t in s.targets:
        if t.circuit != "closed":
            problems.append(f"target {t.name}: circuit {t.circuit} after "
                            f"{t.consecutive_failures} failures")
    if s.dead_letters_open:
        problems.append(f"{sum(s.dead_letters_open.values())} open dead letter(s)")
    return problems


def _ago(ts: float | None, now: float) -> str:
    if ts is None:
        return "never"
    seconds = max(0.0, now - ts)
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def render_text(s: Status) -> str:
    lines = [f"bridge: {'HEALTHY' if s.healthy else 'NEEDS ATTENTION'}"]
    lines += [f"  - {p}" for p in s.problems]
    lines.append("components:")
    lines += [f"  {c.name:<7} {'up' if c.up else 'DOWN':<5} {c.detail}" for c in s.components]
    if s.targets:
        lines.append("targets:")
        for t in s.targets:
            error = f"{_ago(t.last_error_at, s.checked_at)} ({t.last_error})" if t.last_error_at \
                else "never"
            lines.append(f"  {t.name} ({t.kind}): circuit {t.circuit}, queue {t.queue_depth}, "
                         f"last success {_ago(t.last_success_at, s.checked_at)}, "
                         f"last error {error}")
    total = sum(s.dead_letters_open.values())
    lines.append(f"open dead letters: {total}")
    lines += [f"  {reason}: {n}" for reason, n in s.dead_letters_open.items()]
    lines.append(f"tasks waiting in the broker: {s.task_queue_depth}")
    oldest = s.oldest_undelivered_seconds
    lines.append("oldest undelivered event: " + ("none" if oldest is None else f"{oldest:.0f}s old"))
    rec = s.reconciliation
    if rec:
        state = f"every {rec['interval_seconds']}s" if rec["enabled"] else "off"
        lines.append(f"reconciliation: {state}, watermark {rec['watermark'] or 'none yet'}")
    return "\n".join(lines)


def run_status(settings: Settings, as_json: bool) -> int:
    """Exit 0 when healthy, 1 when something needs attention."""
    s = collect(settings)
    print(json.dumps(s.to_json()) if as_json else render_text(s))
    sys.stdout.flush()
    return 0 if s.healthy else 1
