"""`python -m bench.failover`: kill -9 the Redis master mid-run; Sentinel promotes the replica.

Real processes, the roles of compose's `ha` profile: a redis-server master and two replicas,
three redis-sentinel (down-after 2 s), two gunicorn webs, two Celery workers, beat, `calehr
mllp`, the MLLP EHR simulator and the local fake of Cal.com's API v2, all on a `sentinel://`
REDIS_URL. Webhooks go to both webs while the master dies; the old master comes back and
Sentinel makes it a replica. Checked at the EHR as bench/chaos.py does (every change once by
MSH-10, in order per appointment, nothing lost). The other way, the EHR's own appointments
become busy blocks in the ICS feed, and the EHR moves and cancels bookings that came from
Cal.com (bench/failover_calcom.py): each change it got an AA for is POSTed to the fake Cal.com
once, in order. Prints one JSON line: events, kill time, seconds to promotion, seconds without
delivery, lost, duplicated, out of order, both directions. `--confirm` turns on
`[redis] replicas_to_confirm = 1` (Redis WAIT).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

from bench.chaos import ChaosRun, Figures
from bench.chaos_plan import make_plan
from bench.failover_calcom import CalcomChanges, CalcomFigures
from bench.sentinel_set import SentinelSet
from core.redis_client import redis_for_url
from tests.factories import sim_messages
from tests.support import beat_cmd, free_port, wait_for, wait_http, web_cmd

CONFIRM = "\n[redis]\nreplicas_to_confirm = 1\nreplica_wait_ms = 500\n"


@dataclass
class FailoverFigures:
    confirm: bool = False
    kill_at_s: float = 0.0  # after the first post
    promotion_s: float = 0.0  # kill -9 → a sentinel names the replica master and it says so
    old_master_replica_s: float = 0.0  # kill -9 → the old master runs again as a replica
    delivered_before_kill: int = 0
    seconds_without_delivery: float = 0.0  # the EHR's longest gap around the kill
    first_delivery_after_kill_s: float = 0.0
    # reverse direction: the EHR's own appointments over MLLP → busy blocks in Cal.com's ICS feed
    ehr_messages: int = 0  # S12/S15 the EHR sent until each was answered AA
    ehr_resends: int = 0  # sent again after AR 207, no answer or a refused connection
    ehr_blocks_expected: int = 0
    ehr_blocks_lost: int = 0
    ehr_blocks_extra: int = 0  # a cancelled one still there, or one twice
    # reverse direction: the EHR moves/cancels bookings that came from Cal.com → Cal.com's API
    calcom: CalcomFigures = field(default_factory=CalcomFigures)


class FailoverRun(ChaosRun):
    def __init__(self, seed: int, appointments: int, *, confirm: bool, kill_at: float,
                 post_seconds: float, bound: float, keep: bool = False,
                 calcom_bookings: int = 3) -> None:
        plan = make_plan(seed, appointments, post_seconds)
        self.calcom = CalcomChanges(calcom_bookings)
        plan.posts.extend(self.calcom.webhooks)  # checked at the EHR like the others
        plan.changes.extend(self.calcom.webhooks)
        super().__init__(plan, workers=2, bound=bound, faults={}, keep=keep,
                         chaos_seconds=post_seconds)
        self.redis = SentinelSet(self.tmp / "redis", min_replicas_to_write=1 if confirm else 0)
        self.config_extra = CONFIRM if confirm else ""
        self.kill_at = kill_at
        self.ha = FailoverFigures(confirm=confirm, calcom=self.calcom.fig)
        self.killed_wall = 0.0

    def ehr_traffic(self, seconds: float) -> None:
        """The EHR books its own appointments (S12) and cancels every third (S15), spread over
        `seconds`, each sent again until it is answered AA (as an EHR's MLLP client does)."""
        from tests.adapters.hl7v2.inbound_samples import YEAR, siu

        n = max(3, int(seconds * 2))
        msgs = []
        for i in range(n):
            day = f"{YEAR}03{1 + i % 28:02d}{8 + i // 28:02d}"
            msgs.append(siu("S12", f"FO{i:04d}", appt_id=f"EHR-FO-{i}", start=f"{day}0000",
                            end=f"{day}3000"))
            if i % 3 == 2:
                msgs.append(siu("S15", f"FO{i:04d}C", appt_id=f"EHR-FO-{i}", start=f"{day}0000",
                                end=f"{day}3000", status="Cancelled"))
        self.ha.ehr_blocks_expected = n - n // 3
        gap = seconds / len(msgs)
        for msg in msgs:
            self._until_aa(msg)
            self.ha.ehr_messages += 1
            time.sleep(gap)

    def _until_aa(self, msg: bytes) -> None:
        resends = self._send_until_aa(msg)
        self.ha.ehr_resends += max(0, resends)

    def _send_until_aa(self, msg: bytes) -> int:
        """How often `msg` was sent again before an AA; -1 (and a problem) if none came."""
        from tests.adapters.hl7v2.listener import exchange, msa

        for resends in range(600):  # bounded: 600 tries, at most ~2 min
            try:
                if msa(exchange(self.mllp_port, msg)[0])[1] == "AA":
                    return resends
            except (OSError, TimeoutError, StopIteration):
                pass
            time.sleep(0.2)
        self.fig.problems.append("an EHR message was never answered AA")
        return -1

    def run(self) -> Figures:
        try:
            return super().run()
        finally:
            self.calcom.close()

    def check_feed(self, base: str) -> None:
        from tests.adapters.hl7v2.listener import feed

        for _ in range(100):  # the feed answers once Redis does
            answer = feed(base)
            if answer.status_code == 200:
                break
            time.sleep(0.2)
        uids = [line.split(":", 1)[1].strip() for line in answer.text.splitlines()
                if line.startswith("UID:")]
        # only this run's blocks are in the feed (a fresh Redis): count them, and count twins
        want = self.ha.ehr_blocks_expected
        self.ha.ehr_blocks_lost = max(0, want - len(set(uids)))
        self.ha.ehr_blocks_extra = max(0, len(set(uids)) - want) + len(uids) - len(set(uids))
        if self.ha.ehr_blocks_lost or self.ha.ehr_blocks_extra:
            self.fig.problems.append(f"EHR blocks in the feed: lost {self.ha.ehr_blocks_lost}, "
                                     f"extra {self.ha.ehr_blocks_extra}")

    def chaos(self, started: float, stop: threading.Event) -> None:
        if stop.wait(max(0.0, started + self.kill_at - time.monotonic())):
            return
        self.ha.kill_at_s = round(time.monotonic() - started, 2)
        self.ha.delivered_before_kill = len(sim_messages(self.ehr_out))
        self.killed_wall = time.time()
        killed = time.monotonic()
        old = self.redis.kill_master()
        self.fig.kills += 1
        try:
            self.redis.wait_promoted(old)
            self.ha.promotion_s = round(time.monotonic() - killed, 2)
            self.redis.start_node(old)  # as a host comes back: its own config, as a master
            deadline = time.monotonic() + 90
            while not self.redis.linked_replica(old) and time.monotonic() < deadline:
                if stop.wait(0.1):
                    return
            if self.redis.linked_replica(old):
                self.ha.old_master_replica_s = round(time.monotonic() - killed, 2)
            else:
                self.fig.problems.append("the old master did not come back as a replica in 90 s")
        except RuntimeError as exc:  # a step timed out: say so instead of dying quietly
            self.fig.problems.append(f"failover step: {exc}")

    def _run(self, started: float) -> None:
        self.redis.start()
        self.config.write_text(self._config())
        self.start_ehr()
        bases = []
        for _ in range(2):  # two webs, as two hosts behind a balancer
            port = free_port()
            self.start(f"web{len(bases) + 1}", web_cmd(port, 2))
            bases.append(f"http://127.0.0.1:{port}")
        for base in bases:
            wait_http(f"{base}/healthz")
        for _ in range(self.workers_wanted):
            self.start_worker()
        self.start("beat", beat_cmd(self.tmp / "beat-schedule"))
        listener = self.start("mllp", [sys.executable, "-m", "calehr.cli", "mllp", "--port", "0"])
        found = wait_for(lambda: re.search(r"mllp listening on [\d.]+:(\d+)", listener.output()),
                         30, 0.05, "the MLLP listener")
        self.mllp_port = int(found.group(1))
        for proc in self.workers:  # traffic flows before the kill
            wait_for(lambda p=proc: "ready." in p.output(), 60, 0.1, f"{proc.name} to be ready")
        for change in self.calcom.webhooks:  # bookings made in Cal.com, at the EHR first
            self.post(change, bases[0])
        placers = self.calcom.placers(self.ehr_out, 60)
        ehr = threading.Thread(target=self.ehr_traffic, args=(self.chaos_seconds,), daemon=True)
        ehr.start()
        changes = threading.Thread(target=self.calcom.run, daemon=True,
                                   args=(placers, self.chaos_seconds, self._send_until_aa))
        changes.start()
        stop = threading.Event()
        begin = time.monotonic()
        chaos = threading.Thread(target=self.chaos, args=(begin, stop), daemon=True)
        chaos.start()
        posts = [c for c in self.plan.posts if c not in self.calcom.webhooks]
        gap = self.chaos_seconds / max(1, len(posts))
        with ThreadPoolExecutor(8) as pool:
            for i, change in enumerate(posts):
                pool.submit(self.post, change, bases[i % 2])
                time.sleep(gap)
        chaos.join()
        ehr.join(180)
        changes.join(180)
        client = redis_for_url(self.redis.url)
        try:
            self._settle_and_check(client, started)
            self._gap()
            self.check_feed(bases[0])
            self.calcom.check(self.fig.problems, 60)
        finally:
            stop.set()
            client.close()

    def _config(self) -> str:
        from bench.chaos import DELIVERY
        from tests.support import mllp_config

        return self.calcom.config(mllp_config(self.outbox, self.ehr_port, delivery=DELIVERY)) \
            + self.config_extra

    def _gap(self) -> None:
        """The longest time the EHR got nothing, among the gaps that touch the kill."""
        times = sorted(p.stat().st_mtime for p in self.ehr_out.glob("*.hl7"))
        if not times or not self.killed_wall:
            return
        after = [t for t in times if t >= self.killed_wall]
        before = [t for t in times if t < self.killed_wall]
        if after:
            self.ha.first_delivery_after_kill_s = round(after[0] - self.killed_wall, 2)
            self.ha.seconds_without_delivery = round(after[0] - (before[-1] if before
                                                                  else self.killed_wall), 2)


def run_failover(seed: int = 1, appointments: int = 10, *, confirm: bool = False,
                 kill_at: float = 3.0, post_seconds: float = 8.0, bound: float = 120.0,
                 keep: bool = False, calcom_bookings: int = 3) -> tuple[Figures, FailoverFigures]:
    run = FailoverRun(seed, appointments, confirm=confirm, kill_at=kill_at,
                      post_seconds=post_seconds, bound=bound, keep=keep,
                      calcom_bookings=calcom_bookings)
    fig = run.run()
    return fig, run.ha


def summary(fig: Figures, ha: FailoverFigures) -> dict:
    forward = {k: v for k, v in asdict(ha).items() if not k.startswith("ehr_") and k != "calcom"}
    return {"ok": fig.ok, "events": fig.events, "posts": fig.posts, **forward,
            "delivered": fig.delivered, "expected": fig.expected, "lost": fig.missing,
            "resent_same_msh10": fig.duplicates_by_msh10,
            "duplicated_changes": fig.changes_under_two_msh10, "out_of_order": fig.out_of_order,
            "ehr_to_calcom": {k: v for k, v in asdict(ha).items() if k.startswith("ehr_")},
            "ehr_changes_at_calcom_api": asdict(ha.calcom),
            "spooled": fig.spooled, "dead_letters": fig.dead_letters, "seconds": fig.seconds,
            "problems": fig.problems}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.failover", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--appointments", type=int, default=30)
    p.add_argument("--post-seconds", type=float, default=15.0, help="webhooks spread over this")
    p.add_argument("--kill-at", type=float, default=5.0, help="seconds after the first post")
    p.add_argument("--confirm", action="store_true", help="[redis] replicas_to_confirm = 1")
    p.add_argument("--calcom-bookings", type=int, default=5,
                   help="Cal.com bookings the EHR moves twice and cancels during the run")
    p.add_argument("--bound", type=float, default=180.0)
    p.add_argument("--keep", action="store_true")
    args = p.parse_args(argv)
    failed = 0
    for seed in range(1, args.seeds + 1):
        fig, ha = run_failover(seed, args.appointments, confirm=args.confirm,
                               kill_at=args.kill_at, post_seconds=args.post_seconds,
                               bound=args.bound, keep=args.keep,
                               calcom_bookings=args.calcom_bookings)
        print(json.dumps({"seed": seed, **summary(fig, ha)}), flush=True)
        failed += not fig.ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
