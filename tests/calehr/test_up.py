"""`calehr up` in an empty folder, as a new user runs it: real Redis, gunicorn, Celery, beat, MLLP.

One installation per test module (it takes a while to start): first-run secrets and the admin
user, var/run.json used by other commands, a console login with the printed password, a child
killed with SIGKILL that comes back and still delivers, and a clean stop on SIGINT.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.deadletter.console_support import ConsoleClient
from tests.support import ROOT, fixture_bytes, free_port, post_signed, wait_for, wait_http

pytestmark = pytest.mark.slow


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CALEHR_", "REDIS_"))}
    env["PYTHONPATH"] = str(ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def calehr(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "calehr.cli", *args], cwd=cwd, env=clean_env(),
                          capture_output=True, text=True, timeout=timeout)


def children_of(pid: int) -> dict[int, str]:
    """pid -> command line of the direct children of `pid`."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue
    return found


def child_pid(up_pid: int, marker: str) -> int | None:
    return next((p for p, cmd in children_of(up_pid).items() if marker in cmd), None)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@dataclass
class Up:
    proc: subprocess.Popen[bytes]
    folder: Path
    log: Path
    base: str
    mllp_port: int

    def text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    folder = tmp_path_factory.mktemp("fresh")
    port, mllp_port = free_port(), free_port()
    log = folder / "up.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "calehr.cli", "up", "--port", str(port),
                                 "--mllp-port", str(mllp_port)],
                                cwd=folder, env=clean_env(), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    running = Up(proc, folder, log, f"http://127.0.0.1:{port}", mllp_port)
    try:
        wait_http(f"{running.base}/readyz", 90)
        wait_for(lambda: "calehr up: ready (" in running.text(), 30, 0.1, "the ready line")
        yield running
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def test_first_start_writes_fresh_secrets_and_prints_the_console_login(up: Up):
    text = up.text()
    config_path = up.folder / "var" / "calehr.toml"
    config = tomllib.loads(config_path.read_text())
    assert stat.S_IMODE(config_path.stat().st_mode) == 0o600
    secret = re.search(r"and this secret: (\S+)", text).group(1)
    assert secret == config["calcom"]["webhook_secrets"][0] != "whsec_demo_3f9a1c2e7b"
    assert config["security"]["encryption_keys"][0] != "REVNTy1vbmx5LWtleS1uZXZlci1pbi1wcm9kLTAwMDA="
    assert all(p["ics_token"] != "demo-ics-token-okafor" and len(p["ics_token"]) >= 24
               for p in config["providers"])
    assert len(config["console"]["secret_key"]) >= 32
    assert "users" not in config  # the admin lives in the user store, not in the file
    assert f"calehr up: console {up.base}/console/" in text
    assert "calehr up: first console user: admin" in text
    password = re.search(r"calehr up: password: (\S+)", text).group(1)
    assert len(password) >= 16
    assert "calehr users add NAME --role" in text
    # stored only as a hash: the password appears nowhere under var/
    for path in (up.folder / "var").rglob("*"):
        if path.is_file():
            assert password.encode() not in path.read_bytes(), path
    client = ConsoleClient(up.base)
    assert client.login("admin", password).status_code == 302
    assert client.get("/console/deadletters").status_code == 200
    assert ConsoleClient(up.base).login("admin", password + "x").status_code == 401


def test_run_json_lets_every_command_in_the_folder_find_the_bridge(up: Up):
    run_json = up.folder / "var" / "run.json"
    assert stat.S_IMODE(run_json.stat().st_mode) == 0o600
    info = json.loads(run_json.read_text())
    assert info["config"] == str(up.folder / "var" / "calehr.toml")
    assert info["pid"] == up.proc.pid
    check = calehr("config", "check", cwd=up.folder)
    assert check.returncode == 0, check.stderr
    assert f"config ok: {up.folder / 'var' / 'calehr.toml'}" in check.stdout
    assert "DEMO" not in check.stdout
    listed = calehr("deadletter", "list", cwd=up.folder)
    assert listed.returncode == 0 and "dead letter" in listed.stdout, listed.stderr
    assert calehr("audit", cwd=up.folder).returncode == 0
    users = calehr("users", "list", cwd=up.folder)
    assert users.returncode == 0 and re.search(r"^admin\s+admin\s+redis$", users.stdout, re.M)
    second = calehr("up", "--port", str(free_port()), cwd=up.folder)
    assert second.returncode == 2 and f"already runs in this folder (pid {up.proc.pid}" in second.stderr


def test_a_killed_child_is_restarted_and_the_bridge_still_delivers(up: Up):
    secret = re.search(r"and this secret: (\S+)", up.text()).group(1)
    redis_pid = child_pid(up.proc.pid, "redis-server")
    os.kill(redis_pid, signal.SIGKILL)
    wait_for(lambda: "calehr up: redis exited with -9; restarting it" in up.text(), 30, 0.1,
             "the Redis restart to be logged")
    wait_for(lambda: child_pid(up.proc.pid, "redis-server") not in (None, redis_pid), 30,
             0.1, "Redis to be back")
    users = wait_for(lambda: (r := calehr("users", "list", cwd=up.folder)).returncode == 0 and r,
                     30, 0.3, "calehr users list against the restarted Redis")
    assert "admin" in users.stdout  # AOF: the data survived the kill
    for name, marker in (("worker", "celery -A calehr.celery_app worker"),
                         ("web", "gunicorn"), ("mllp", "calehr.cli mllp")):
        old = wait_for(lambda m=marker: child_pid(up.proc.pid, m), 30, 0.1, f"{name} to run")
        os.killpg(old, signal.SIGKILL)
        line = f"calehr up: {name} (pid {old}) exited with signal SIGKILL"
        wait_for(lambda line=line: line in up.text(), 30, 0.1, f"the {name} exit to be logged")
        new = wait_for(lambda m=marker, o=old: (p := child_pid(up.proc.pid, m)) not in (None, o)
                       and p, 60, 0.1, f"{name} to be restarted")
        assert alive(new) and not alive(old)
        assert re.search(rf"calehr up: {name} \(pid {old}\) exited .* restarting in \d+s", up.text())
    wait_http(f"{up.base}/readyz", 60)
    body = fixture_bytes("02_booking_created.json")
    assert post_signed(up.base, body, secret=secret).status_code == 202
    files = wait_for(lambda: list((up.folder / "var" / "outbox").glob("*.hl7")), 90, 0.2,
                     "the S12 in var/outbox after the restarts")
    assert b"SIU^S12^SIU_S12" in files[0].read_bytes()

    def nak() -> bytes:
        try:
            with socket.create_connection(("127.0.0.1", up.mllp_port), timeout=3) as s:
                s.sendall(b"\x0bnot hl7\x1c\x0d")
                return s.recv(65536)
        except OSError:
            return b""

    assert b"MSA|AR" in wait_for(nak, 60, 0.2, "the restarted MLLP listener to answer")


def test_sigint_stops_every_child_and_commands_then_say_so_in_one_line(up: Up):
    kids = set(children_of(up.proc.pid))
    assert len(kids) >= 5  # redis, web, worker, beat, mllp
    os.kill(up.proc.pid, signal.SIGINT)  # what Ctrl-C sends (the terminal signals the group)
    assert up.proc.wait(60) == 0, up.text()[-3000:]
    assert "calehr up: stopped" in up.text()
    wait_for(lambda: not any(alive(p) for p in kids), 10, 0.1, "every child to be gone")
    after = calehr("deadletter", "list", cwd=up.folder)
    assert after.returncode == 2 and "Traceback" not in after.stderr
    assert after.stderr.count("\n") == 1 and "is not running" in after.stderr
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{up.base}/readyz", timeout=2)
