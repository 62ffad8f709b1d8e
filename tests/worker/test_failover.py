"""kill -9 of the Redis master mid-run with real processes on a sentinel:// REDIS_URL
(bench/failover.py; the longer run is `python -m bench.failover`). One quick run in CI, with
`[redis] replicas_to_confirm = 1`: every acknowledged webhook reaches the EHR once, in order, and
every EHR message answered AA over MLLP is a busy block in the ICS feed Cal.com reads, and every
change the EHR made to a booking from Cal.com (S13 moves, S15 cancel; answered AA) is POSTed to
the fake Cal.com API once, in order, across the kill. Two replicas: the surviving one confirms
writes right after the promotion."""

from __future__ import annotations

import json

import pytest

from bench.failover import run_failover, summary

pytestmark = pytest.mark.slow


def test_master_killed_mid_run_replica_promoted_nothing_lost_or_doubled(capsys):
    fig, ha = run_failover(seed=7, appointments=8, confirm=True, kill_at=2.5, post_seconds=6.0,
                           bound=120.0)
    with capsys.disabled():
        print(f"\nFAILOVER {json.dumps(summary(fig, ha))}")
    assert fig.problems == [], fig.problems
    assert fig.kills == 1 and ha.promotion_s > 0 and ha.old_master_replica_s > ha.promotion_s
    assert ha.delivered_before_kill > 0 and ha.first_delivery_after_kill_s > 0  # traffic both sides
    assert fig.delivered == fig.expected > 0 and fig.missing == 0
    assert fig.changes_under_two_msh10 == 0 and fig.out_of_order == 0
    # the other direction: every EHR message answered AA is a block in Cal.com's feed, once
    assert ha.ehr_messages > 0 and ha.ehr_blocks_expected > 0
    assert ha.ehr_blocks_lost == 0 and ha.ehr_blocks_extra == 0
    # the EHR's changes to bookings from Cal.com: each AA'd one POSTed once, in order
    changes = ha.calcom
    assert changes.changes_acked == 9 and changes.posts == 9
    assert changes.lost == changes.duplicated == changes.out_of_order == changes.stray == 0
