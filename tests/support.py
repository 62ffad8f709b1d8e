"""Test helpers: real processes, signed fixtures, and waiting on conditions (never on sleeps)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "calcom"  # byte-exact copies of ../shared/fixtures
SECRET = "whsec_demo_3f9a1c2e7b"
KEY = "REVNTy1vbmx5LWtleS1uZXZlci1pbi1wcm9kLTAwMDA="
PHI_STRINGS = (
    "Jordan", "Reyes", "jordan.reyes@example.com", "+13125550147", "1984-03-09", "19840309",
    "XQJ-448-21907", "Priya", "Natarajan", "priya.natarajan@example.com", "1971-11-23",
    "BCB-902-55310", "migraines", "Amina", "Okafor",
)


# appointments "in the future" are this many years ahead of the clock the tests run on
FUTURE_YEAR = time.gmtime().tm_year + 4


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def sign(body: bytes, secret: str = SECRET) -> str:
    import hashlib
    import hmac

    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def wait_for(condition: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05,
             message: str = "condition") -> Any:
    """Poll `condition` until it returns something truthy; fail with `message` on timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message} (last={last!r})")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


FAST_DELIVERY = {
    "retry_base_seconds": "0.2", "retry_max_backoff_seconds": "2.0",
    "countdown_max_seconds": "5.0", "lock_ttl_seconds": "20.0", "sweep_interval_seconds": "0.5",
    "stuck_event_seconds": "5.0", "circuit_failure_threshold": "3",
    "circuit_open_seconds": "1.0", "circuit_max_open_seconds": "4.0",
}


def _delivery(overrides: str) -> str:
    """Fast test timings; `overrides` holds `key = value` lines that replace them."""
    values = dict(FAST_DELIVERY)
    for line in overrides.splitlines():
        if "=" in line:
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip()
    return "\n".join(f"{k} = {v}" for k, v in values.items())


def config_text(outbox: Path, extra_targets: str = "", routes: str | None = None,
                delivery: str = "", secrets: tuple[str, ...] = (SECRET,),
                prefix: str = "calehr") -> str:
    secret_list = ", ".join(f'"{s}"' for s in secrets)
    routes = routes if routes is not None else '[[routes]]\ntargets = ["files"]\n'
    return f"""
key_prefix = "{prefix}"
var_dir = "{outbox.parent / 'var'}"

[calcom]
webhook_secrets = [{secret_list}]

[security]
encryption_keys = ["{KEY}"]

[patient]
dob_field = "dateOfBirth"
id_field = "insuranceMemberId"
id_authority = "INS"

[[providers]]
calcom_user = "dr-okafor"
ehr_id = "OKAFOR01"
name = "Okafor^Amina^^^Dr."
ics_token = "tok-okafor"

[[event_types]]
slug = "new-patient-consult"
code = "NPC"
name = "New Patient Consult"

[[event_types]]
slug = "follow-up-visit"
code = "FUV"
name = "Follow-up Visit"

[[locations]]
match = "Lakeside Clinic"
code = "LAKESIDE^400^^LSC"
name = "Lakeside Clinic"

[[targets]]
name = "files"
kind = "file"
path = "{outbox}"
timezone = "America/Chicago"

{extra_targets}

{routes}

[worker]
visibility_timeout = 60
task_soft_time_limit = 10
task_time_limit = 15

[delivery]
{_delivery(delivery)}
"""


def mllp_target(port: int, *, timezone: str = "America/Chicago", read_timeout: str = "3.0",
                extra: str = "") -> str:
    """An MLLP target named "ehr" on loopback with short test timeouts."""
    return f"""
[[targets]]
name = "ehr"
kind = "mllp"
host = "127.0.0.1"
port = {port}
timezone = "{timezone}"
connect_timeout = 1.0
read_timeout = {read_timeout}
{extra}
"""


def mllp_config(outbox: Path, port: int, read_timeout: str = "3.0", **kw: str) -> str:
    """The test config with every event routed to the MLLP target "ehr" only."""
    return config_text(outbox, extra_targets=mllp_target(port, read_timeout=read_timeout),
                       routes='[[routes]]\ntargets = ["ehr"]\n', **kw)


class Proc:
    """A child process with its output captured to a file (read it when a test fails)."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log_dir: Path,
                 cwd: Path = ROOT) -> None:
        self.name = name
        self.cmd = cmd
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill9(self) -> None:
        """SIGKILL the whole process group: the worker and its pool children die at once."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill9()
        self._log.close()


def base_env(config: Path, redis_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CALEHR_", "REDIS_"))}
    env.update({"CALEHR_CONFIG": str(config), "REDIS_URL": redis_url,
                "PYTHONUNBUFFERED": "1",
                # keeps tests/clockshift (the moved-clock run) on the path of every child process
                "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))})
    return env


def worker_cmd(concurrency: int = 2, hostname: str = "w1") -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "calehr.celery_app", "worker", "-Q", "calehr",
            "-c", str(concurrency), "--loglevel", "INFO", "--without-gossip", "--without-mingle",
            "--hostname", f"{hostname}@%h"]


def beat_cmd(schedule: Path) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "calehr.celery_app", "beat", "--loglevel",
            "INFO", "--schedule", str(schedule)]


def web_cmd(port: int, workers: int = 2, threads: int | None = None) -> list[str]:
    """gunicorn as `calehr web` runs it (calehr/webserver.py), on loopback."""
    from calehr.webserver import THREADS, gunicorn_cmd

    return gunicorn_cmd(f"127.0.0.1:{port}", workers, threads or THREADS)


def ehr_sim_cmd(port: int, out: Path, ack: str = "AA", delay_ms: int = 0,
                extra: tuple[str, ...] = ()) -> list[str]:
    return [sys.executable, "-m", "adapters.hl7v2.ehr_sim", "--port", str(port), "--out", str(out),
            "--ack", ack, "--delay-ms", str(delay_ms), *extra]


def wait_http(url: str, timeout: float = 30.0) -> None:
    def ok() -> bool:
        try:
            return requests.get(url, timeout=1).status_code == 200
        except requests.RequestException:
            return False

    wait_for(ok, timeout, 0.1, f"{url} to answer 200")


def post_signed(base: str, body: bytes, secret: str = SECRET, **headers: str) -> requests.Response:
    hdrs = {"Content-Type": "application/json", "X-Cal-Signature-256": sign(body, secret)}
    hdrs.update(headers)
    return requests.post(f"{base}/webhooks/calcom", data=body, headers=hdrs, timeout=10)
