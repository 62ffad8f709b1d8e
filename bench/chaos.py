"""`python -m bench.chaos --seeds 50`: randomized crash tests of the delivery guarantees.

One seed decides everything a run does: N appointments with random event sequences (create,
request then confirm or reject, reschedule chains, cancel, no-show), exact and logical
duplicates, the posting order, crash points (core/faults.py) and when a worker is killed with
`kill -9`, when Redis restarts and when the EHR simulator goes down and up. Real processes
throughout: Redis (AOF), gunicorn, several Celery workers, beat, `calehr ehr-sim`.

Checked at the EHR and in Redis: every change arrives, under one MSH-10 only (a resend reuses
it), in order per appointment; no dead letter; every event final within the bound. A run
prints one JSON line of figures; a failing seed runs the same scenario again.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import redis
import requests

from bench.chaos_plan import Change, Plan, make_plan
from core.deliveries import control_id_for
from core.embedded_redis import EmbeddedRedis
from core.redis_client import redis_for_url
from tests.factories import sim_messages
from tests.support import (
    Proc,
    base_env,
    beat_cmd,
    ehr_sim_cmd,
    free_port,
    mllp_config,
    post_signed,
    wait_for,
    wait_http,
    web_cmd,
    worker_cmd,
)

FINAL = ("done", "skipped", "unrouted", "dead", "ignored")
# quick recovery: the sweep every 0.5 s, a stuck event or queue re-sent after 2 s, locks of a
# killed worker gone after 3 s; nothing waits long enough for its order wait to expire
DELIVERY = """
retry_base_seconds = 0.2
retry_max_backoff_seconds = 1.0
countdown_max_seconds = 5.0
lock_ttl_seconds = 3.0
sweep_interval_seconds = 0.5
stuck_event_seconds = 2.0
appointment_lock_seconds = 3.0
order_wait_seconds = 600.0
circuit_failure_threshold = 3
circuit_open_seconds = 0.5
circuit_max_open_seconds = 2.0
"""
FAULTS = {"after_accept": 0.02, "after_send_before_commit": 0.03,
          "after_commit_before_unpark": 0.03, "spool_drain": 0.03}


# -- running it ---------------------------------------------------------------------------------
@dataclass
class Figures:
    seed: int
    appointments: int
    events: int
    posts: int
    fault_points_hit: dict[str, int] = field(default_factory=dict)
    spooled: int = 0  # answered 202 from the spool while Redis was down
    reposts: int = 0  # posts sent again after no answer (a web worker died at a crash point)
    kills: int = 0
    redis_restarts: int = 0
    ehr_outages: int = 0
    worker_exits: int = 0  # workers that died on their own and were started again
    delivered: int = 0  # distinct MSH-10 at the EHR
    expected: int = 0
    missing: int = 0
    unexpected: int = 0  # an MSH-10 the bridge should not have sent
    duplicates_by_msh10: int = 0  # copies the EHR got again under the same MSH-10 (allowed)
    changes_under_two_msh10: int = 0
    out_of_order: int = 0
    dead_letters: int = 0
    wrongly_skipped: int = 0
    superseded: int = 0  # skipped as stale because a later change of it went out first
    not_final: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class ChaosRun:
    def __init__(self, plan: Plan, workers: int = 2, bound: float = 150.0,
                 faults: dict[str, float] | None = None, keep: bool = False,
                 chaos_seconds: float = 8.0) -> None:
        self.plan = plan
        self.chaos_seconds = chaos_seconds
        self.workers_wanted = workers
        self.bound = bound
        self.faults = FAULTS if faults is None else faults
        self.keep = keep
        self.tmp = Path(tempfile.mkdtemp(prefix=f"calehr-chaos-{plan.seed}-"))
        self.logs = self.tmp / "logs"
        self.logs.mkdir()
        self.redis = EmbeddedRedis(self.tmp / "redis")
        self.outbox = self.tmp / "outbox"
        self.outbox.mkdir()
        self.ehr_out = self.tmp / "ehr-inbox"
        self.ehr_port = free_port()
        self.config = self.tmp / "calehr.toml"
        self.fault_log = self.tmp / "faults.log"
        self.procs: list[Proc] = []
        self.workers: list[Proc] = []
        self.ehr: Proc | None = None
        self.fig = Figures(plan.seed, len({c.appointment for c in plan.changes}),
                           len(plan.changes), len(plan.posts))
        self.lock = threading.Lock()
        self.names = 0
        self.config_extra = ""  # more TOML for the bridge's config

    # processes
    def env(self) -> dict[str, str]:
        env = base_env(self.config, self.redis.url)
        env["CALEHR_FAULTS"] = ",".join(f"{k}:{v}" for k, v in self.faults.items())
        env["CALEHR_FAULT_SEED"] = str(self.plan.seed)
        env["CALEHR_FAULT_LOG"] = str(self.fault_log)
        return env

    def start(self, name: str, cmd: list[str]) -> Proc:
        proc = Proc(name, cmd, self.env(), self.logs)
        self.procs.append(proc)
        return proc

    def start_worker(self) -> Proc:
        with self.lock:
            self.names += 1
            name = f"worker{self.names}"
        proc = self.start(name, worker_cmd(2, name))
        self.workers.append(proc)
        return proc

    def start_ehr(self) -> None:
        self.ehr = self.start("ehr-sim", ehr_sim_cmd(self.ehr_port, self.ehr_out))
        proc = self.ehr
        wait_for(lambda: "listening" in proc.output(), 30, 0.05, "ehr-sim to listen")

    def keep_workers_up(self) -> None:
        """Like compose's restart policy: a worker that exited on its own is started again."""
        for proc in list(self.workers):
            if proc.proc.poll() is not None:
                self.workers.remove(proc)
                self.fig.worker_exits += 1
                self.start_worker()

    # the run
    def post(self, change: Change, base: str) -> None:
        for attempt in range(30):  # a crash point can take the web worker down mid-request
            try:
                answer = post_signed(base, change.body)
                if answer.status_code == 202:
                    with self.lock:
                        self.fig.spooled += bool(answer.json().get("spooled"))
                        self.fig.reposts += attempt
                    return
            except requests.RequestException:
                pass
            time.sleep(min(1.0, 0.1 * (attempt + 1)))
        self.fig.problems.append(f"post never answered 202 ({change.group})")

    def chaos(self, started: float, stop: threading.Event) -> None:
        for at, action in self.plan.chaos:
            if stop.wait(max(0.0, started + at - time.monotonic())):
                return
            if action == "kill9" and self.workers:
                victim = self.workers[self.plan.seed % len(self.workers)]
                self.workers.remove(victim)
                victim.kill9()
                self.fig.kills += 1
                self.start_worker()
            elif action == "redis_restart":
                self.redis.stop()
                if stop.wait(1.5):  # long enough for some webhooks to go to the spool
                    return
                self.redis.start()
                self.fig.redis_restarts += 1
            elif action == "ehr_down" and self.ehr is not None:
                self.ehr.stop()
                self.fig.ehr_outages += 1
                if stop.wait(3.0):
                    return
                self.start_ehr()

    def run(self) -> Figures:
        started = time.monotonic()
        try:
            self._run(started)
        finally:
            self.fig.seconds = round(time.monotonic() - started, 2)
            for proc in reversed(self.procs):
                with contextlib.suppress(Exception):
                    proc.stop(5)
            with contextlib.suppress(Exception):
                self.redis.stop()
            if self.fig.ok and not self.keep:
                shutil.rmtree(self.tmp, ignore_errors=True)
            else:
                self.fig.problems.append(f"logs kept in {self.tmp}")
        return self.fig

    def _run(self, started: float) -> None:
        self.redis.start()
        self.config.write_text(mllp_config(self.outbox, self.ehr_port, delivery=DELIVERY)
                               + self.config_extra)
        self.start_ehr()
        port = free_port()
        self.start("web", web_cmd(port, 2))
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/healthz")
        for _ in range(self.workers_wanted):
            self.start_worker()
        self.start("beat", beat_cmd(self.tmp / "beat-schedule"))
        stop = threading.Event()
        chaos = threading.Thread(target=self.chaos, args=(time.monotonic(), stop), daemon=True)
        chaos.start()
        gap = self.chaos_seconds / max(1, len(self.plan.posts))  # posts spread over the chaos
        with ThreadPoolExecutor(8) as pool:
            for change in self.plan.posts:
                pool.submit(self.post, change, base)
                time.sleep(gap)
        chaos.join()
        client = redis_for_url(self.redis.url)  # a sentinel:// set too (bench/failover.py)
        try:
            self._settle_and_check(client, started)
        finally:
            stop.set()
            client.close()

    # the invariants
    def _event_ids(self, client: redis.Redis) -> dict[str, str | None]:
        """Body sha256 → event id (spooled bodies get theirs when the spool drains)."""
        digests = {hashlib.sha256(p.body).hexdigest() for p in self.plan.posts}
        pipe = client.pipeline(transaction=False)
        for d in sorted(digests):
            pipe.get(f"calehr:event-hash:{d}")
        return {d: (v.decode() if v else None) for d, v in zip(sorted(digests), pipe.execute(),
                                                                strict=True)}

    def _states(self, client: redis.Redis, ids: list[str]) -> dict[str, tuple[str, str]]:
        pipe = client.pipeline(transaction=False)
        for event_id in ids:
            pipe.hmget(f"calehr:event:{event_id}", "state", "reason")
        return {e: ((s or b"").decode(), (r or b"").decode())
                for e, (s, r) in zip(ids, pipe.execute(), strict=True)}

    def _settle_and_check(self, client: redis.Redis, started: float) -> None:
        """Wait (bounded by the run's bound) until everything is final, then count."""
        deadline = started + self.bound
        while time.monotonic() < deadline:
            self.keep_workers_up()
            with contextlib.suppress(redis.RedisError):
                if self._settled(client):
                    break
            time.sleep(0.25)
        self._check(client)

    def _settled(self, client: redis.Redis) -> bool:
        ids = self._event_ids(client)
        if None in ids.values():
            return False
        states = self._states(client, list(ids.values()))
        if any(s not in FINAL for s, _ in states.values()):
            return False
        want = {control_id_for(f"{e}.ehr") for e, (s, _) in states.items() if s == "done"}
        return want <= {m["control_id"] for m in sim_messages(self.ehr_out)}

    def _check(self, client: redis.Redis) -> None:
        fig = self.fig
        ids = self._event_ids(client)
        by_digest = {hashlib.sha256(p.body).hexdigest(): p for p in self.plan.posts}
        known = {d: e for d, e in ids.items() if e}
        fig.not_final += len(ids) - len(known)
        states = self._states(client, list(known.values()))
        changes_of: dict[str, Change] = {known[d]: by_digest[d] for d in known}
        fig.not_final += sum(1 for s, _ in states.values() if s not in FINAL)
        fig.dead_letters = int(client.zcard("calehr:dl:all"))
        # which copy of each logical change went out
        sent: dict[str, list[str]] = defaultdict(list)
        stale: list[Change] = []
        for event_id, (state, reason) in states.items():
            change = changes_of[event_id]
            if state == "done":
                sent[change.group].append(event_id)
            elif state == "skipped" and reason.startswith("duplicate_of:"):
                continue
            elif state == "skipped" and reason.startswith("stale"):
                stale.append(change)  # fine if a later change of the booking went out instead
            elif state in FINAL:
                fig.wrongly_skipped += 1
                fig.problems.append(f"{change.group} {change.trigger} ended {state}: {reason}")
        fig.changes_under_two_msh10 = sum(1 for v in sent.values() if len(v) > 1)
        for change in stale:  # design: a change older than one already applied is skipped
            later = [g for g in sent if g.split(".")[0] == str(change.appointment)
                     and int(g.split(".")[1]) > change.index]
            if later:
                fig.superseded += 1
            else:
                fig.wrongly_skipped += 1
                fig.problems.append(f"{change.group} {change.trigger} skipped as stale, "
                                    "but no later change went out")
        expected = {control_id_for(f"{e}.ehr"): changes_of[e] for v in sent.values() for e in v}
        msgs = sim_messages(self.ehr_out)
        got = [m["control_id"] for m in msgs]
        fig.expected = len(expected)
        fig.delivered = len(set(got))
        fig.missing = len(set(expected) - set(got))
        fig.unexpected = len(set(got) - set(expected))
        fig.duplicates_by_msh10 = len(got) - len(set(got))
        first: dict[int, list[int]] = defaultdict(list)
        seen: set[str] = set()
        for cid in got:
            if cid in expected and cid not in seen:
                seen.add(cid)
                first[expected[cid].appointment].append(expected[cid].index)
        fig.out_of_order = sum(1 for order in first.values() if order != sorted(order))
        hits: dict[str, int] = defaultdict(int)
        if self.fault_log.exists():
            for line in self.fault_log.read_text().splitlines():
                hits[line.split()[0]] += 1
        fig.fault_points_hit = dict(hits)
        for name in ("missing", "unexpected", "changes_under_two_msh10", "out_of_order",
                     "dead_letters", "not_final"):
            if getattr(fig, name):
                fig.problems.append(f"{name}={getattr(fig, name)}")


def run_seed(seed: int, appointments: int = 12, workers: int = 2, bound: float = 150.0,
             chaos_seconds: float = 8.0, keep: bool = False) -> Figures:
    plan = make_plan(seed, appointments, chaos_seconds)
    return ChaosRun(plan, workers=workers, bound=bound, keep=keep,
                    chaos_seconds=chaos_seconds).run()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=50, help="how many seeds (from --first)")
    p.add_argument("--first", type=int, default=1, help="the first seed")
    p.add_argument("--seed", type=int, action="append", help="run exactly this seed (repeatable)")
    p.add_argument("--appointments", type=int, default=20)
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--bound", type=float, default=180.0, help="seconds for every event to end")
    p.add_argument("--keep", action="store_true", help="keep the temp folder of every run")
    args = p.parse_args(argv)

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # every run stops its processes on the way out

    signal.signal(signal.SIGTERM, interrupted)
    seeds = args.seed or list(range(args.first, args.first + args.seeds))
    failed = []
    totals: dict[str, float] = defaultdict(float)
    for seed in seeds:
        fig = run_seed(seed, args.appointments, args.workers, args.bound, keep=args.keep)
        print(json.dumps({"ok": fig.ok, **asdict(fig)}), flush=True)
        for k, v in asdict(fig).items():
            if isinstance(v, int | float) and k != "seed":
                totals[k] += v
        for k, v in fig.fault_points_hit.items():
            totals[f"hit:{k}"] += v
        if not fig.ok:
            failed.append(seed)
    print(json.dumps({"seeds": len(seeds), "failed_seeds": failed,
                      **{k: round(v, 2) for k, v in totals.items()}}), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
