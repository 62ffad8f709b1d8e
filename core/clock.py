"""The bridge's one clock: production code asks here for "now", so a test can move it."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

_source: Callable[[], float] = time.time


def now() -> float:
    """Seconds since the epoch, from the current source (the system clock unless a test set one)."""
    return _source()


def now_utc() -> datetime:
    return datetime.fromtimestamp(_source(), UTC)


def set_source(source: Callable[[], float]) -> None:
    global _source
    _source = source


def reset() -> None:
    set_source(time.time)


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
