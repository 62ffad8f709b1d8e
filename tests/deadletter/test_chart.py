from __future__ import annotations

from deadletter.console.chart import failure_chart


def test_no_failures_draws_no_chart():
    assert failure_chart([]) is None


def test_a_burst_gets_small_buckets_and_some_context_before_it():
    t0 = 1_800_000_000.0
    chart = failure_chart([t0, t0 + 1, t0 + 50], until=t0 + 60)
    assert chart is not None
    assert chart.bucket_label == "10 s" and len(chart.bars) == 12
    assert sum(b.count for b in chart.bars) == 3 and chart.max_count == 2
    assert all(b.height <= chart.height - chart.bottom - chart.top for b in chart.bars)


def test_a_day_of_failures_is_drawn_in_hourly_bars_within_the_range():
    t0 = 1_800_000_000.0
    times = [t0 + i * 600 for i in range(144)]
    chart = failure_chart(times, since=t0, until=t0 + 86400)
    assert chart is not None and chart.bucket_label == "1 h"
    assert sum(b.count for b in chart.bars) == 144 and len(chart.bars) <= 48
