from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from core.config import Settings
from core.embedded_redis import EmbeddedRedis
from tests.support import (
    Proc,
    base_env,
    beat_cmd,
    config_text,
    ehr_sim_cmd,
    free_port,
    wait_for,
    wait_http,
    web_cmd,
    worker_cmd,
)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> str:
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
def rclient(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def outbox(tmp_path: Path) -> Path:
    path = tmp_path / "outbox"
    path.mkdir()
    return path


class Stack:
    """Real processes for one test: web (gunicorn), workers, beat, EHR simulators."""

    def __init__(self, tmp_path: Path, redis_url: str) -> None:
        self.tmp = tmp_path
        self.redis_url = redis_url
        self.log_dir = tmp_path / "logs"
        self.log_dir.mkdir(exist_ok=True)
        self.config = tmp_path / "calehr.toml"
        self.procs: list[Proc] = []
        self.web_base = ""

    def write_config(self, text: str) -> Path:
        self.config.write_text(text)
        return self.config

    @property
    def env(self) -> dict[str, str]:
        return base_env(self.config, self.redis_url)

    def settings(self) -> Settings:
        return Settings.load(self.env)

    def start(self, name: str, cmd: list[str]) -> Proc:
        proc = Proc(name, cmd, self.env, self.log_dir)
        self.procs.append(proc)
        return proc

    def worker(self, name: str = "worker", concurrency: int = 2) -> Proc:
        proc = self.start(name, worker_cmd(concurrency, name))
        wait_for(lambda: "ready." in proc.output() or proc.proc.poll() is not None, 60, 0.1,
                 f"{name} to be ready")
        assert proc.proc.poll() is None, proc.output()
        return proc

    def beat(self) -> Proc:
        return self.start("beat", beat_cmd(self.tmp / "beat-schedule"))

    def web(self, workers: int = 2) -> str:
        port = free_port()
        self.start("web", web_cmd(port, workers))
        self.web_base = f"http://127.0.0.1:{port}"
        wait_http(f"{self.web_base}/healthz")
        return self.web_base

    def ehr_sim(self, port: int, out: Path, ack: str = "AA", delay_ms: int = 0,
                name: str = "ehr-sim", extra: tuple[str, ...] = ()) -> Proc:
        out.mkdir(parents=True, exist_ok=True)
        proc = self.start(name, ehr_sim_cmd(port, out, ack, delay_ms, extra))
        wait_for(lambda: "listening" in proc.output(), 30, 0.05, f"{name} to listen")
        return proc

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()

    def logs(self) -> str:
        return "\n".join(f"===== {p.name}\n{p.output()[-4000:]}" for p in self.procs)


@pytest.fixture
def stack(tmp_path: Path, redis_url: str, request: pytest.FixtureRequest) -> Iterator[Stack]:
    s = Stack(tmp_path, redis_url)
    yield s
    s.stop()
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print(s.logs())


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture
def default_config(stack: Stack, outbox: Path) -> Path:
    return stack.write_config(config_text(outbox))


# Tests whose outcome depends on the wall clock (watermarks, feed windows, retention, expiry).
# scripts/test runs them a second time with every process's clock moved ahead (tests/clockshift).
CLOCK_SENSITIVE = (
    "tests/worker/test_reconcile.py",
    "tests/worker/test_retention.py",
    "tests/webhooks/test_ics.py",
    "tests/webhooks/test_fhir_inbound.py",
    "tests/adapters/hl7v2/test_mllp_server.py",
    "tests/deadletter/test_console_http.py",
    "tests/core/test_clock.py",
    "tests/adapters/fhir/test_tls.py",
    "tests/adapters/hl7v2/test_mllp_tls.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid.startswith(CLOCK_SENSITIVE):
            item.add_marker(pytest.mark.clock)
