"""core.clock: one source of "now" that tests can move, and proof that the moved-clock run moves it."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from core import clock
from tests.support import ROOT


def test_frozen_at_fixes_now_and_restores_it():
    when = datetime.now(UTC) + timedelta(days=3650)
    with clock.frozen_at(when):
        assert clock.now() == when.timestamp()
        assert clock.now_utc() == when
    assert abs(clock.now() - datetime.now(UTC).timestamp()) < 60


def test_offset_from_the_environment_moves_a_real_process(tmp_path):
    env = {**os.environ, "CALEHR_CLOCK_OFFSET_SECONDS": str(30 * 86400)}
    run = subprocess.run([sys.executable, "-c", "from core import clock; print(clock.now())"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True)
    ahead = float(run.stdout) - datetime.now(UTC).timestamp()
    assert 30 * 86400 - 60 < ahead < 30 * 86400 + 60


@pytest.mark.skipif(not os.environ.get("TEST_CLOCK_SHIFT_DAYS"), reason="only in the moved-clock run")
def test_the_moved_clock_run_moves_every_python_process(rclient):
    """Redis is not moved: its TIME is the real clock to compare with."""
    real = rclient.time()[0]
    days = float(os.environ["TEST_CLOCK_SHIFT_DAYS"])
    child = subprocess.run([sys.executable, "-c", "import time; print(time.time())"],
                           capture_output=True, text=True, timeout=60, check=True)
    for seen in (datetime.now(UTC).timestamp(), clock.now(), float(child.stdout)):
        assert abs(seen - real - days * 86400) < 600
