"""Two bridges with their own var/ folders (as two machines) on one Redis: webhooks to either,
each one's spool drained, deliveries once and in order at the EHR, one beat at a time, and
/metrics giving the same shared figures from either host. Real gunicorn, Celery workers,
beats, Redis and the MLLP EHR simulator (bench/chaos.py's checks at the EHR)."""

from __future__ import annotations

import re
import shutil
import time

import pytest
import requests

from bench.chaos import DELIVERY, ChaosRun
from bench.chaos_plan import make_plan
from core.redis_client import redis_for_url
from tests.support import (
    Proc,
    base_env,
    beat_cmd,
    free_port,
    mllp_config,
    wait_for,
    wait_http,
    web_cmd,
    worker_cmd,
)

pytestmark = pytest.mark.slow
LEADING, SENDING = "beat: leading", "Sending due task"


class TwoHosts(ChaosRun):
    def __init__(self) -> None:
        super().__init__(make_plan(3, 6, 4.0), faults={}, bound=90.0)
        self.bases: dict[str, str] = {}
        self.beats: dict[str, Proc] = {}

    def host(self, name: str) -> None:
        folder = self.tmp / name
        folder.mkdir()
        config = folder / "calehr.toml"  # var_dir = <folder>/var: its own spool
        config.write_text(mllp_config(folder / "outbox", self.ehr_port, delivery=DELIVERY)
                          + "\n[redis]\nbeat_lock_seconds = 2.0\n")
        (folder / "outbox").mkdir()
        env = base_env(config, self.redis.url)
        port = free_port()
        for proc_name, cmd in ((f"{name}-web", web_cmd(port, 2)),
                               (f"{name}-worker", worker_cmd(2, f"{name}-worker")),
                               (f"{name}-beat", beat_cmd(folder / "beat-schedule"))):
            proc = Proc(proc_name, cmd, env, self.logs)
            self.procs.append(proc)
            if proc_name.endswith("beat"):
                self.beats[name] = proc
        self.bases[name] = f"http://127.0.0.1:{port}"
        wait_http(f"{self.bases[name]}/healthz")

    def _run(self, started: float) -> None:  # the test drives it step by step
        pass


def received_total(base: str) -> float:
    text = requests.get(f"{base}/metrics", timeout=5).text
    return sum(float(v) for v in re.findall(r"^calehr_webhooks_received_total\{[^}]*\} (\S+)$",
                                            text, re.M))


def test_two_hosts_share_one_redis_one_beat_both_spools_drained_all_delivered_in_order():
    run = TwoHosts()
    passed = False
    try:
        run.redis.start()
        run.start_ehr()
        run.host("a")
        run.host("b")
        wait_for(lambda: sum(LEADING in b.output() for b in run.beats.values()) == 1, 30,
                 message="one beat to lead")
        leader = next(n for n, b in run.beats.items() if LEADING in b.output())
        standby = "b" if leader == "a" else "a"
        wait_for(lambda: SENDING in run.beats[leader].output(), 20, message="the leader's ticks")

        posts = run.plan.posts
        run.redis.stop()  # Redis down: each web keeps what it gets in its own var/spool
        for i, change in enumerate(posts[:6]):
            run.post(change, run.bases["ab"[i % 2]])
        assert run.fig.spooled == 6
        spools = [run.tmp / h / "var" / "spool" for h in "ab"]
        assert all(any(p.glob("*.spool")) for p in spools)  # both hosts spooled some
        run.redis.start()
        for i, change in enumerate(posts[6:]):
            run.post(change, run.bases["ab"[i % 2]])
        client = redis_for_url(run.redis.url)
        wait_for(lambda: run._settled(client), 90, 0.25, "every event final and at the EHR")
        run._check(client)
        assert run.fig.problems == [], run.fig.problems
        assert run.fig.delivered == run.fig.expected > 0 and run.fig.out_of_order == 0
        wait_for(lambda: not any(any(p.glob("*.spool")) for p in spools), 20,
                 message="both spools drained")
        totals = [received_total(run.bases[h]) for h in "ab"]
        assert totals[0] == totals[1] == len(posts) - 6  # shared counters: one figure, any host
        assert SENDING not in run.beats[standby].output()

        run.beats[leader].kill9()  # the standby takes over once the lock expires
        killed = time.monotonic()
        wait_for(lambda: LEADING in run.beats[standby].output(), 20, message="a new leader")
        wait_for(lambda: SENDING in run.beats[standby].output(), 20, message="its ticks")
        assert time.monotonic() - killed < 10
        passed = True
    finally:
        run.fig.problems.clear()
        run.keep = False
        for proc in reversed(run.procs):
            proc.stop(5)
        run.redis.stop()
        if passed:  # else the logs stay for a look
            shutil.rmtree(run.tmp, ignore_errors=True)

