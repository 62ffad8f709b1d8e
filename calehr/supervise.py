"""Keeps `calehr up`'s children running: a child that dies is restarted with backoff.

Each child runs in its own process group, so a terminal's Ctrl-C reaches only the supervisor,
which then stops the children in order (SIGTERM to the group, SIGKILL after a grace period).
PR_SET_PDEATHSIG makes a child go too if the supervisor itself is killed.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field

from core.embedded_redis import EmbeddedRedis

BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0
STABLE_AFTER = 30.0  # a child that ran this long starts again from the first backoff
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def backoff(failures: int) -> float:
    """Seconds before restart number `failures` (1, 2, 4, ... up to BACKOFF_MAX)."""
    return min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** max(0, failures - 1))


@dataclass
class Child:
    name: str
    cmd: list[str]
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restart_at: float = 0.0  # > 0 while waiting to restart
    failures: int = 0  # quick deaths in a row
    restarts: int = 0


@dataclass
class Supervisor:
    env: dict[str, str]
    log: Callable[[str], None]
    grace_seconds: float = 15.0
    children: dict[str, Child] = field(default_factory=dict)
    redis: EmbeddedRedis | None = None
    stopping: bool = False

    def add(self, name: str, cmd: list[str]) -> None:
        self.children[name] = Child(name, cmd)

    def watch_redis(self, server: EmbeddedRedis) -> None:
        self.redis = server

    def request_stop(self, *_: object) -> None:
        self.stopping = True

    def _spawn(self, child: Child) -> None:
        child.proc = subprocess.Popen(child.cmd, env=self.env, start_new_session=True,
                                      preexec_fn=_die_with_parent)  # noqa: PLW1509
        child.started_at = time.monotonic()
        child.restart_at = 0.0

    def start_all(self) -> None:
        for child in self.children.values():
            self._spawn(child)

    def check(self) -> None:
        """One supervision pass: notice deaths, restart what is due."""
        now = time.monotonic()
        if self.redis is not None and self.redis.proc is not None \
                and self.redis.proc.poll() is not None:
            self.log(f"redis exited with {self.redis.proc.returncode}; restarting it on port "
                     f"{self.redis.port}")
            try:
                self.redis.start()
            except RuntimeError as exc:
                self.log(f"redis did not come back: {exc}; trying again")
        for child in self.children.values():
            if child.restart_at:
                if now >= child.restart_at and not self.stopping:
                    child.restarts += 1
                    self.log(f"restarting {child.name} (restart {child.restarts})")
                    self._spawn(child)
                continue
            if child.proc is None or child.proc.poll() is None:
                continue
            ran = now - child.started_at
            child.failures = 1 if ran >= STABLE_AFTER else child.failures + 1
            delay = backoff(child.failures)
            child.restart_at = now + delay
            self.log(f"{child.name} (pid {child.proc.pid}) exited with {_exit_text(child.proc)} "
                     f"after {ran:.1f}s; restarting in {delay:.0f}s")

    def run(self, ready_url: str = "", interval: float = 0.2) -> None:
        announced = not ready_url
        next_probe = 0.0
        while not self.stopping:
            self.check()
            if not announced and time.monotonic() >= next_probe:
                next_probe = time.monotonic() + 1.0
                if _answers(ready_url):
                    announced = True
                    self.log(f"ready ({ready_url})")
            time.sleep(interval)

    def stop_all(self) -> None:
        live = [c for c in self.children.values() if c.proc and c.proc.poll() is None]
        for child in live:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace_seconds
        for child in live:
            try:
                child.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.log(f"{child.name} did not stop in {self.grace_seconds:.0f}s; killing it")
            with contextlib.suppress(ProcessLookupError):  # pool processes of a stopped worker
                os.killpg(child.proc.pid, signal.SIGKILL)
            child.proc.wait()


def _exit_text(proc: subprocess.Popen[bytes]) -> str:
    code = proc.returncode
    if code is not None and code < 0:
        return f"signal {signal.Signals(-code).name}"
    return f"code {code}"


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=0.5) as resp:  # noqa: S310 - our own loopback URL
            return resp.status == 200
    except OSError:
        return False
