"""The supervisor behind `calehr up`, with real child processes."""

from __future__ import annotations

import os
import sys
import time

from calehr.supervise import BACKOFF_MAX, Supervisor, backoff
from tests.support import wait_for


def test_backoff_doubles_up_to_the_cap():
    assert [backoff(n) for n in (1, 2, 3, 4, 5, 6, 7)] == [1, 2, 4, 8, 16, 30, 30]
    assert backoff(50) == BACKOFF_MAX


def test_a_child_that_keeps_dying_is_restarted_ever_more_slowly_and_stops_cleanly():
    lines: list[str] = []
    sup = Supervisor(dict(os.environ), log=lines.append, grace_seconds=5)
    sup.add("crashy", [sys.executable, "-c", "raise SystemExit(3)"])
    sup.add("steady", [sys.executable, "-c", "import time; time.sleep(60)"])
    sup.start_all()
    steady_pid = sup.children["steady"].proc.pid

    def restarted_twice() -> bool:
        sup.check()
        return sup.children["crashy"].restarts >= 2

    started = time.monotonic()
    wait_for(restarted_twice, 20, 0.05, "two restarts")
    # first death waits 1 s, the second 2 s: the restarts cannot come sooner than 3 s
    assert time.monotonic() - started >= 3.0
    exits = [line for line in lines if line.startswith("crashy (pid")]
    assert "exited with code 3" in exits[0] and exits[0].endswith("restarting in 1s")
    assert exits[1].endswith("restarting in 2s")
    assert sup.children["steady"].proc.pid == steady_pid  # the healthy child was left alone
    sup.stop_all()
    assert sup.children["steady"].proc.returncode == -15  # SIGTERM
