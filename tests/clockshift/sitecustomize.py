"""Moves the wall clock of every Python process the tests start, when TEST_CLOCK_SHIFT_DAYS is set.

On PYTHONPATH for the moved-clock run (scripts/test). time-machine moves time.time() and
datetime.now() only; monotonic clocks, sleeps and timed waits stay real (libfaketime 0.9.10 hangs
Python's timed lock waits or breaks its sleeps, so it cannot move a whole Celery stack).
"""

import os

_days = os.environ.get("TEST_CLOCK_SHIFT_DAYS")
if _days:
    import time

    import time_machine

    time_machine.travel(time.time() + float(_days) * 86400, tick=True).start()
