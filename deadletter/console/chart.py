"""Failures over time as bars for a small inline SVG (drawn on the server, no script)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from core import clock
from deadletter.console.templating import utc_time

BUCKET_SECONDS = (10, 30, 60, 300, 900, 3600, 3 * 3600, 6 * 3600, 86400, 7 * 86400, 30 * 86400)
WIDTH, HEIGHT, LEFT, BOTTOM, TOP = 760, 150, 36, 22, 10


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    count: int
    label: str


@dataclass(frozen=True)
class FailureChart:
    bars: list[Bar]
    max_count: int
    bucket_label: str
    start_label: str
    end_label: str
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    bottom: int = BOTTOM
    top: int = TOP

    @property
    def baseline(self) -> int:
        return self.height - self.bottom


def _bucket_label(seconds: int) -> str:
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d"


def failure_chart(times: list[float], since: float | None = None, until: float | None = None,
                  max_bars: int = 48, min_bars: int = 12) -> FailureChart | None:
    if not times:
        return None
    end = until if until is not None else max(max(times), clock.now())
    start = since if since is not None else min(times)
    span = max(end - start, 60.0)
    bucket = next((b for b in BUCKET_SECONDS if span / b <= max_bars), BUCKET_SECONDS[-1])
    first = math.floor(start / bucket) * bucket
    n = max(1, math.ceil((end - first) / bucket))
    if n > max_bars:  # only for spans beyond the largest bucket: keep the newest
        first = first + (n - max_bars) * bucket
        n = max_bars
    if n < min_bars and since is None:  # a short burst: show some time before it too
        first -= (min_bars - n) * bucket
        n = min_bars
    counts = [0] * n
    for t in times:
        i = int((t - first) // bucket)
        if 0 <= i < n:
            counts[i] += 1
    top = max(counts) or 1
    plot_w = WIDTH - LEFT - 4
    plot_h = HEIGHT - BOTTOM - TOP
    slot = plot_w / n
    bars = []
    for i, c in enumerate(counts):
        h = plot_h * c / top
        bars.append(Bar(x=round(LEFT + i * slot + slot * 0.1, 1), y=round(TOP + plot_h - h, 1),
                        width=round(max(slot * 0.8, 1.0), 1), height=round(h, 1), count=c,
                        label=f"{utc_time(first + i * bucket, seconds=False)}: {c}"))
    return FailureChart(bars=bars, max_count=max(counts), bucket_label=_bucket_label(bucket),
                        start_label=utc_time(first, seconds=False),
                        end_label=utc_time(first + n * bucket, seconds=False))
