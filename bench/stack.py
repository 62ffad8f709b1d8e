"""Real processes on loopback for one scenario: Redis, gunicorn, Celery, beat, the EHR simulator.

Everything lives in one temp folder and is stopped by `close()` (also on Ctrl-C or an error:
use the stack as a context manager).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from types import TracebackType

import redis

from bench.procfs import PeakMemory, cpu_seconds, machine_busy_seconds
from calehr.webserver import THREADS
from core.embedded_redis import EmbeddedRedis
from tests.support import (
    Proc,
    base_env,
    beat_cmd,
    ehr_sim_cmd,
    free_port,
    mllp_config,
    wait_for,
    wait_http,
    web_cmd,
    worker_cmd,
)

TARGET = "ehr"
# Production defaults ([delivery] in README), except: a short circuit so that a drain starts
# within seconds of the EHR coming back, a 1 s sweep, and countdowns at most a quarter of
# config_text's 60 s visibility timeout.
DELIVERY = """
retry_base_seconds = 2.0
retry_max_backoff_seconds = 3600.0
countdown_max_seconds = 15.0
lock_ttl_seconds = 120.0
stuck_event_seconds = 60.0
sweep_interval_seconds = 1.0
circuit_failure_threshold = 5
circuit_open_seconds = 2.0
circuit_max_open_seconds = 4.0
"""


def bench_config(outbox: Path, ehr_port: int) -> str:
    return mllp_config(outbox, ehr_port, read_timeout="5.0", delivery=DELIVERY)


class BenchStack:
    keep = False  # keep the temp folder (logs, EHR inbox, Redis AOF) for a look afterwards
    appendfsync = "always"  # the design's Redis setting; "everysec" to see what fsync costs
    replica = False  # a replica, and [redis] replicas_to_confirm = 1 (WAIT before every ack)

    def __init__(self, name: str) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix=f"calehr-bench-{name}-"))
        self.logs = self.tmp / "logs"
        self.logs.mkdir()
        self.inbox = self.tmp / "ehr-inbox"
        self.ehr_port = free_port()
        self.config = self.tmp / "calehr.toml"
        self.config.write_text(bench_config(self.tmp / "outbox", self.ehr_port))
        self.redis_server = EmbeddedRedis(self.tmp / "redis")
        self.redis_server.start()
        self.redis = redis.Redis.from_url(self.redis_server.url)
        self.redis.config_set("appendfsync", self.appendfsync)
        if self.replica:
            self._with_replica()
        self.procs: dict[str, Proc] = {}
        self.memory = PeakMemory()
        self.memory.watch("redis", self.redis_server.proc.pid)
        self.memory.__enter__()

    def _with_replica(self) -> None:
        from bench.sentinel_set import SentinelSet, start_node

        port = free_port()
        self.replica_server = start_node(self.tmp / "replica", port, self.redis_server.port)
        SentinelSet(self.tmp).wait_replicated(self.redis_server.port)
        with open(self.config, "a") as fh:
            fh.write("\n[redis]\nreplicas_to_confirm = 1\nreplica_wait_ms = 500\n")

    @property
    def env(self) -> dict[str, str]:
        return base_env(self.config, self.redis_server.url)

    def _start(self, name: str, cmd: list[str]) -> Proc:
        proc = Proc(name, cmd, self.env, self.logs)
        self.procs[name] = proc
        return proc

    web_threads = THREADS  # gunicorn --threads per gthread worker; `python -m bench --web-threads`

    def web(self, workers: int = 2) -> str:
        port = free_port()
        cmd = web_cmd(port, workers, self.web_threads)
        self.memory.watch("web", self._start("web", cmd).pid)
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/healthz")
        return base

    pool = "prefork"  # Celery --pool; `python -m bench --pool threads`

    def workers(self, processes: int) -> Proc:
        """One Celery worker with a pool of `processes` (children or threads)."""
        proc = self._start("worker", [*worker_cmd(processes, "bench"), "--pool", self.pool])
        return self._ready_worker(proc, "worker")

    def bare(self, processes: int, web_workers: int = 2) -> str:
        """The bare pipeline (bench/bare.py) instead of the bridge: web and worker on this Redis."""
        port = free_port()
        ours = web_cmd(port, web_workers, self.web_threads)  # [python -m gunicorn app ...]
        web = [*ours[:3], "bench.bare:web", *ours[4:]]
        self.memory.watch("web", self._start("web", web).pid)
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/healthz")
        worker = worker_cmd(processes, "bare")  # [python -m celery -A app worker -Q queue ...]
        cmd = [*worker[:4], "bench.bare:celery_app", "worker", "-Q", "bare", *worker[8:]]
        self._ready_worker(self._start("worker", cmd), "bare worker")
        return base

    def _ready_worker(self, proc: Proc, what: str) -> Proc:
        """Wait until a Celery worker says it is ready (or fails), then watch its memory."""
        wait_for(lambda: "ready." in proc.output() or proc.proc.poll() is not None, 60, 0.1,
                 f"the {what} to be ready")
        if proc.proc.poll() is not None:
            raise RuntimeError(f"{what} exited:\n{proc.output()[-2000:]}")
        self.memory.watch("worker", proc.pid)
        return proc

    def beat(self) -> Proc:
        return self._start("beat", beat_cmd(self.tmp / "beat-schedule"))

    def ehr_sim(self) -> Proc:
        self.inbox.mkdir(exist_ok=True)
        proc = self._start("ehr-sim", ehr_sim_cmd(self.ehr_port, self.inbox))
        wait_for(lambda: "listening" in proc.output(), 30, 0.05, "the EHR simulator to listen")
        return proc

    def cpu(self) -> dict[str, float]:
        """CPU seconds used so far per process tree, and by this (client) process."""
        used = {name: cpu_seconds(p.pid) for name, p in self.procs.items()}
        used["redis"] = cpu_seconds(self.redis_server.proc.pid)
        times = os.times()
        used["client"] = times.user + times.system
        used["machine"] = machine_busy_seconds()
        return used

    def queue_length(self) -> int:
        return int(self.redis.llen("calehr"))

    def close(self) -> None:
        self.memory.sample()
        self.memory.__exit__()
        for proc in reversed(list(self.procs.values())):
            proc.stop()
        self.redis.close()
        if self.replica:
            self.replica_server.terminate()
            self.replica_server.wait(10)
        self.redis_server.stop()
        if self.keep:
            print(f"kept {self.tmp}", flush=True)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> BenchStack:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if isinstance(exc, Exception):  # not on Ctrl-C or SIGTERM
            for proc in self.procs.values():
                print(f"===== {proc.name}\n{proc.output()[-3000:]}")
        self.close()
