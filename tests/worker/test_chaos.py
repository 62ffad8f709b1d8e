"""A few quick seeds of the randomized crash test (bench/chaos.py; the soak is
`python -m bench.chaos --seeds 50`). Real processes: Redis, gunicorn, Celery workers, beat and
the MLLP EHR simulator, with crash points, kill -9, a Redis restart and an EHR outage."""

from __future__ import annotations

import json

import pytest

from bench.chaos import make_plan, run_seed

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("seed", [11, 23])
def test_chaos_seed_loses_nothing_and_keeps_order(seed: int, capsys: pytest.CaptureFixture) -> None:
    fig = run_seed(seed, appointments=8, workers=2, bound=120.0, chaos_seconds=6.0)
    with capsys.disabled():
        print(f"\nCHAOS {json.dumps(fig.__dict__)}")
    assert fig.problems == [], f"seed {seed} failed; run `python -m bench.chaos --seed {seed}`"
    assert fig.kills >= 1 and fig.redis_restarts == 1 and fig.ehr_outages == 1
    assert fig.delivered == fig.expected > 0


def test_a_seed_makes_the_same_scenario_again() -> None:
    one, two = make_plan(5, 6, 8.0), make_plan(5, 6, 8.0)
    assert [p.body for p in one.posts] == [p.body for p in two.posts]
    assert one.chaos == two.chaos
    assert [p.body for p in make_plan(6, 6, 8.0).posts] != [p.body for p in one.posts]
