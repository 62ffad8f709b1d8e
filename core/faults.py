"""Test-only crash points: make a process die (os._exit) at a named step, to prove recovery.

    CALEHR_FAULTS="after_accept:0.1,after_send_before_commit:0.2"   point:probability, ...
    CALEHR_FAULT_SEED=42         the random stream (mixed with the pid: each process its own)
    CALEHR_FAULT_LOG=/path       optional: one line "point pid" appended before each crash

Read once at import. Unset (production), `crash_point` is one lookup in an empty dict.
"""

from __future__ import annotations

import os
import random

POINTS = (
    "after_accept",  # web: the body is stored, before the enqueue and the 202
    "after_send_before_commit",  # worker: the EHR has the message, the ledger does not know yet
    "after_commit_before_unpark",  # worker: event accepted, before follow-ups (waiters, conflicts)
    "spool_drain",  # web: inside the spool drain, after a record went into the store
    "mllp_after_store",  # MLLP listener: message stored, before it is applied and ACKed
    "sweep_mid",  # worker: a beat sweep halfway, holding the sweep lock
)
EXIT_CODE = 75  # what a crashed process exits with (EX_TEMPFAIL), so tests can tell it apart


class FaultConfigError(ValueError):
    pass


def parse(spec: str) -> dict[str, float]:
    """`point:probability,...` → {point: probability}. Unknown points and bad numbers raise."""
    points: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, value = item.partition(":")
        if name not in POINTS:
            raise FaultConfigError(f"CALEHR_FAULTS: unknown point {name!r} (known: {', '.join(POINTS)})")
        try:
            probability = float(value) if value else 1.0
        except ValueError:
            raise FaultConfigError(f"CALEHR_FAULTS: {name}: {value!r} is not a number") from None
        if not 0.0 <= probability <= 1.0:
            raise FaultConfigError(f"CALEHR_FAULTS: {name}: probability must be in [0, 1]")
        points[name] = probability
    return points


_points: dict[str, float] = parse(os.environ.get("CALEHR_FAULTS", ""))
_seed = int(os.environ.get("CALEHR_FAULT_SEED", "0") or 0)
_log = os.environ.get("CALEHR_FAULT_LOG", "")
_rng: random.Random | None = None
_rng_pid = 0


def crash_point(name: str) -> None:
    """Die here with probability p when CALEHR_FAULTS names this point; else do nothing."""
    probability = _points.get(name)
    if probability is None:
        return
    global _rng, _rng_pid
    if _rng is None or _rng_pid != os.getpid():  # forked children draw their own numbers
        _rng, _rng_pid = random.Random(_seed * 1_000_003 + os.getpid()), os.getpid()
    if _rng.random() >= probability:
        return
    if _log:
        fd = os.open(_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.write(fd, f"{name} {os.getpid()}\n".encode())
        os.close(fd)
    os._exit(EXIT_CODE)
