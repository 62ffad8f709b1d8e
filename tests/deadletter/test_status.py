"""`calehr status` and the console's Status page against real processes: gunicorn, a Celery
worker, beat and an MLLP EHR that is first down, then rejects (AE)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from core.heartbeat import Heartbeat, read_beats
from tests.deadletter.console_support import ConsoleClient, users_toml
from tests.factories import appointment_bodies
from tests.support import ROOT, config_text, free_port, mllp_target, post_signed, wait_for


def status(stack) -> tuple[int, dict]:
    run = subprocess.run([sys.executable, "-m", "calehr.cli", "status", "--json"], env=stack.env,
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode in (0, 1), run.stderr
    return run.returncode, json.loads(run.stdout)


def component(s: dict, name: str) -> dict:
    return next(c for c in s["components"] if c["name"] == name)


def target(s: dict, name: str) -> dict:
    return next(t for t in s["targets"] if t["name"] == name)


def test_heartbeat_expires_when_its_process_stops_beating(rclient: redis.Redis):
    beat = Heartbeat(rclient, "calehr", "worker", ttl_seconds=1)
    beat.beat()  # one beat, then silence, as from a process killed with SIGKILL
    assert [b.component for b in read_beats(rclient, "calehr")] == ["worker"]
    wait_for(lambda: not read_beats(rclient, "calehr"), 10, 0.1, "the heartbeat to expire")


@pytest.mark.slow
def test_status_shows_where_the_bridge_is_unhealthy(stack, outbox: Path, tmp_path: Path):
    ehr_port = free_port()  # nothing listens yet: the EHR is down
    stack.write_config(config_text(outbox, extra_targets=mllp_target(ehr_port),
                                   routes='[[routes]]\ntargets = ["files", "ehr"]\n')
                       + users_toml())
    base = stack.web()
    worker = stack.worker()
    stack.beat()
    wait_for(lambda: all(component(status(stack)[1], n)["up"] for n in ("web", "worker", "beat")),
             60, 0.5, "web, worker and beat heartbeats")
    started = time.time()
    for i in range(2):
        assert post_signed(base, appointment_bodies(i, "S")["created"]).status_code == 202

    def circuit_open() -> dict | None:
        code, s = status(stack)
        return s if code == 1 and target(s, "ehr")["circuit"] == "open" else None

    s = wait_for(circuit_open, 90, 0.5, "the ehr circuit to open in calehr status")
    assert not s["healthy"]
    for name in ("redis", "web", "worker", "beat", "spool"):
        assert component(s, name)["up"], component(s, name)
    assert component(s, "web")["processes"] == 2
    assert not component(s, "mllp")["up"]  # no listener in this stack
    ehr, files = target(s, "ehr"), target(s, "files")
    assert ehr["queue_depth"] == 2 and ehr["last_error"] == "transient"
    assert ehr["last_error_at"] >= started and ehr["last_success_at"] is None
    assert files["circuit"] == "closed" and files["queue_depth"] == 0
    assert files["last_success_at"] >= started
    assert 0 < s["oldest_undelivered_seconds"] < time.time() - started + 5
    assert any("target ehr: circuit open" in p for p in s["problems"])
    assert s["reconciliation"] == {"enabled": False, "interval_seconds": 0, "watermark": None}

    stack.ehr_sim(ehr_port, tmp_path / "ehr-ae", ack="AE")  # the EHR is back, and rejects
    s = wait_for(lambda: (x := status(stack)[1])["dead_letters_open"] and x, 90, 0.5,
                 "dead letters in calehr status")
    s = wait_for(lambda: (x := status(stack)[1])["dead_letters_open"].get("delivery:ack_AE") == 2
                 and x, 60, 0.5, "both dead letters")
    assert target(s, "ehr")["queue_depth"] == 0 and s["oldest_undelivered_seconds"] is None

    text = subprocess.run([sys.executable, "-m", "calehr.cli", "status"], env=stack.env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert text.returncode == 1 and "bridge: NEEDS ATTENTION" in text.stdout
    assert "delivery:ack_AE: 2" in text.stdout and "mllp    DOWN" in text.stdout

    client = ConsoleClient(base)
    assert client.login("vera").status_code == 302  # a viewer may look
    page = client.get("/console/status")
    assert page.status_code == 200 and "Needs attention" in page.text
    assert 'data-target="ehr"' in page.text and "delivery:ack_AE" in page.text
    assert "/console/deadletters?state=open&amp;stage=delivery&amp;error_code=ack_AE" in page.text

    worker.stop()  # a stopped worker removes its heartbeat at once
    s = wait_for(lambda: not component(x := status(stack)[1], "worker")["up"] and x, 30, 0.5,
                 "the worker to show down")
    assert "worker is down" in " ".join(s["problems"])
