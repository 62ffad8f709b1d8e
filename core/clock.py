"""The bridge's one clock: production code asks here for "now", so a test can move it."""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime


def _system_source() -> Callable[[], float]:
    """The system clock, moved by CALEHR_CLOCK_OFFSET_SECONDS (tests of real processes only)."""
    offset = float(os.environ.get("CALEHR_CLOCK_OFFSET_SECONDS") or 0)
    if not offset:
        return time.time
    return lambda: time.time() + offset


_source: Callable[[], float] = _system_source()


def now() -> float:
    """Seconds since the epoch, from the current source (the system clock unless a test set one)."""
    return _source()


def now_utc() -> datetime:
    return datetime.fromtimestamp(_source(), UTC)


def set_source(source: Callable[[], float]) -> None:
    global _source
    _source = source


def reset() -> None:
    set_source(_system_source())


@contextmanager
def frozen_at(when: float | datetime) -> Iterator[None]:
    """Run a block with "now" fixed (tests): a float epoch or an aware datetime."""
    fixed = when.timestamp() if isinstance(when, datetime) else float(when)
    previous = _source
    set_source(lambda: fixed)
    try:
        yield
    finally:
        set_source(previous)
