"""`python -m bench`: run the benchmarks, print one JSON line per figure, then a table.

Every scenario starts its own Redis, gunicorn, Celery worker, beat and EHR simulator on
loopback in a temp folder, and stops them at the end (also on Ctrl-C, SIGTERM or an error).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench import backlog, mapping, scenarios
from bench.stack import BenchStack
from calehr.webserver import THREADS

ALL = ("ingest", "e2e", "bare", "mapping", "backlog")
# issue 20's goals; the end-to-end rate's is relative: 3x commit 984ba6c's, run back to back
TARGETS = {"ingest": 0.5, "e2e_throughput": "3x 984ba6c", "e2e_p99_at_50": 50, "mapping": 5,
           "backlog": 500, "cpu_ms_per_booking": 5, "redis_commands_per_booking": 25}


def _csv(kind: Callable[[str], object]) -> Callable[[str], list]:
    return lambda text: [kind(x) for x in text.split(",") if x]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", type=_csv(str), default=list(ALL), help=f"some of {','.join(ALL)}")
    p.add_argument("--seconds", type=float, default=10, help="ingest: seconds per route")
    p.add_argument("--connections", type=int, default=8, help="ingest: concurrent connections")
    p.add_argument("--workers", type=_csv(int), default=[1, 2, 4],
                   help="end to end: worker processes (one Celery worker, prefork pool)")
    p.add_argument("--burst", type=int, default=1000, help="end to end: bookings for bookings/s")
    p.add_argument("--rates", type=_csv(float), default=[50, 200], help="offered bookings/s")
    p.add_argument("--rate-seconds", type=float, default=10, help="seconds at each rate")
    p.add_argument("--backlog", type=int, default=2000, help="events queued while the EHR is down")
    p.add_argument("--backlog-workers", type=int, default=4)
    p.add_argument("--backlog-fill", choices=["http", "direct"], default="http",
                   help="backlog: webhooks through gunicorn, or the store and pipeline in-process")
    p.add_argument("--backlog-timeout", type=float,
                   help="backlog: max seconds to wait for the drain (default: n/20, at least --timeout)")
    p.add_argument("--mapping", type=int, default=50_000, help="messages per builder (max)")
    p.add_argument("--timeout", type=float, default=300, help="max seconds to wait per phase")
    p.add_argument("--appendfsync", choices=["always", "everysec"], default="always",
                   help="Redis AOF fsync policy (the design says always)")
    p.add_argument("--replica", action="store_true",
                   help="a Redis replica and [redis] replicas_to_confirm = 1 (WAIT before acks)")
    p.add_argument("--web-threads", type=int, default=THREADS,
                   help="gunicorn --threads per (gthread) web worker; default as `calehr web`")
    p.add_argument("--pool", choices=["prefork", "threads"], default="prefork",
                   help="Celery worker pool for the bridge (--workers = its concurrency)")
    p.add_argument("--keep", action="store_true", help="keep each scenario's temp folder")
    p.add_argument("--out", type=Path, help="also append the JSON lines to this file")
    return p.parse_args(argv)


def emit(figure: dict, out: Path | None) -> None:
    line = json.dumps(figure)
    print(line, flush=True)
    if out:
        with open(out, "a") as fh:
            fh.write(line + "\n")


def table(figures: list[dict]) -> str:
    rows = [("figure", "result", "target")]
    for f in figures:
        kind = f["figure"]
        if kind == "ingest":
            rows.append(("ingest webhooks/s", f"{f['per_s']} (p50 {f['p50_ms']} ms, p99 {f['p99_ms']} ms)",
                         ""))
            rows.append(("ingest ratio to /healthz", f"{f['ratio_to_baseline']}",
                         f">= {TARGETS['ingest']}"))
            cpu = f["cpu_us_per_request"]
            rows.append(("ingest CPU per webhook", f"{sum(v for k, v in cpu.items() if k != 'other')} µs "
                         f"(web {cpu['web']}, Redis {cpu['redis']}, client {cpu['client']}); "
                         f"CPU ratio to /healthz {f['cpu_ratio_to_baseline']}", ""))
        elif kind == "ingest_baseline":
            rows.append(("/healthz req/s", f"{f['per_s']} (p50 {f['p50_ms']} ms, p99 {f['p99_ms']} ms)",
                         ""))
        elif kind == "e2e_throughput":
            rows.append((f"e2e bookings/s, {f['workers']} worker(s)",
                         f"{f['bookings_per_s']} (lost {f['lost']}, dup {f['duplicates']})",
                         f">= {TARGETS['e2e_throughput']} (4)" if f["workers"] == 4 else ""))
            cpu = f["cpu_ms_per_booking"]
            rows.append((f"e2e CPU per booking, {f['workers']} worker(s)",
                         f"{sum(cpu.values()):.1f} ms (worker {cpu.get('worker')}, Redis "
                         f"{cpu.get('redis')}, web {cpu.get('web')})",
                         f"<= {TARGETS['cpu_ms_per_booking']} ms"))
            rows.append((f"e2e Redis commands per booking, {f['workers']} worker(s)",
                         f"{f['redis_commands_per_booking']}",
                         f"<= {TARGETS['redis_commands_per_booking']}"))
        elif kind == "e2e_latency":
            target = f"p99 < {TARGETS['e2e_p99_at_50']} ms" if f["offered_per_s"] == 50 else ""
            rows.append((f"e2e at {f['offered_per_s']:g}/s, {f['workers']} worker(s)",
                         f"p50 {f['p50_ms']} ms, p99 {f['p99_ms']} ms ({f['bookings_per_s']}/s)",
                         target))
        elif kind == "bare_throughput":
            ours = next((g for g in figures if g["figure"] == "e2e_throughput"
                         and g["workers"] == f["workers"]), None)
            ratio = f" = ours x{ours['bookings_per_s'] / f['bookings_per_s']:.2f}" if ours else ""
            rows.append((f"bare pipeline bookings/s, {f['workers']} worker(s)",
                         f"{f['bookings_per_s']} (lost {f['lost']}){ratio}", ">= 0.5x (ours/bare)"))
        elif kind == "bare_latency":
            rows.append((f"bare at {f['offered_per_s']:g}/s, {f['workers']} worker(s)",
                         f"p50 {f['p50_ms']} ms, p99 {f['p99_ms']} ms", ""))
        elif kind == "mapping":
            rows.append(("build_siu msgs/s", f"{f['build_siu_per_s']} (hl7apy {f['hl7apy_per_s']})", ""))
            rows.append(("mapping ratio to hl7apy", f"{f['ratio']}x", f">= {TARGETS['mapping']}x"))
        elif kind == "backlog":
            rows.append((f"backlog {f['events']} ({f['fill']}): drain",
                         f"{'' if f['drained'] else 'NOT DRAINED, '}{f['seconds_to_drain']} s = "
                         f"{f['drain_per_s']}/s (lost {f['lost']}, dup {f['duplicates']}, "
                         f"same-MSH-10 resends {f['resent_same_msh10']}, "
                         f"out of order {f['out_of_order']})", f">= {TARGETS['backlog']}/s"))
            rows.append((f"backlog {f['events']}: longest gap, longest task",
                         f"{f['longest_gap_s']} s; " + ", ".join(
                             f"{k.removeprefix('calehr.')} {v} s" for k, v in
                             f["max_task_seconds"].items()), "no stall"))
        elif kind == "memory":
            for role in ("web", "worker", "redis"):
                if role in f:
                    rows.append((f"peak RSS {role}", f"{f[role]['peak_rss_mb']} MB "
                                 f"({f[role]['processes']} processes)", ""))
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, width, strict=True)).rstrip()
                     for r in rows)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: every stack closes
    BenchStack.keep, BenchStack.appendfsync = args.keep, args.appendfsync
    BenchStack.replica = args.replica
    BenchStack.web_threads, BenchStack.pool = args.web_threads, args.pool
    figures: list[dict] = []
    peaks: dict[str, dict] = {}

    def record(found: list[dict], memory: dict, scenario: str) -> None:
        for f in found:
            emit(f, args.out)
            figures.append(f)
        emit({"figure": "memory_scenario", "scenario": scenario, **memory}, args.out)
        for role, m in memory.items():
            if m["peak_rss_mb"] > peaks.get(role, {}).get("peak_rss_mb", -1):
                peaks[role] = {**m, "scenario": scenario}

    started = time.monotonic()
    emit({"figure": "machine", "cpus": os.cpu_count(), "loadavg_at_start": os.getloadavg(),
          "appendfsync": args.appendfsync, "replica_wait": args.replica}, args.out)
    if os.getloadavg()[0] > 0.5:
        print("warning: the machine is busy (load average above 0.5): figures will be low",
              file=sys.stderr)
    if "ingest" in args.only:
        record(*scenarios.ingest(args.seconds, args.connections), "ingest")
    if "e2e" in args.only:
        for n in args.workers:
            record(*scenarios.end_to_end(n, args.burst, args.rates, args.rate_seconds,
                                         args.timeout), f"e2e-{n}")
    if "bare" in args.only:  # right after e2e: the ratio compares two runs on one machine state
        for n in args.workers:
            record(*scenarios.bare_end_to_end(n, args.burst, args.rates, args.rate_seconds,
                                              args.timeout), f"bare-{n}")
    if "mapping" in args.only:
        f = mapping.run(args.mapping)
        emit(f, args.out)
        figures.append(f)
    if "backlog" in args.only:
        record(*backlog.run(args.backlog, args.backlog_workers,
                            args.backlog_timeout or max(args.timeout, args.backlog / 20),
                            args.backlog_fill), "backlog")
    if peaks:
        f = {"figure": "memory", **peaks}
        emit(f, args.out)
        figures.append(f)
    emit({"figure": "machine", "loadavg_at_end": os.getloadavg()}, args.out)
    print(f"\n{table(figures)}\n\n(total {time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
