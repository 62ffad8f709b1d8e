"""`calehr web` runs gunicorn with threaded workers (calehr/webserver.py), and `calehr up`, the
tests and the bench start that same command line, so what is measured is what runs."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import redis

from calehr.up import _commands
from calehr.webserver import THREADS, WORKER_CLASS, gunicorn_cmd
from tests.conftest import Stack
from tests.support import fixture_bytes, free_port, post_signed, wait_http, web_cmd


def test_calehr_web_serves_a_webhook_while_another_client_holds_a_thread(
        stack: Stack, default_config: Path, rclient: redis.Redis) -> None:
    """One worker process: a client that sends half a request and waits holds one thread;
    with a sync worker the webhook would wait behind it until gunicorn's 30 s timeout."""
    port = free_port()
    web = stack.start("web", [sys.executable, "-m", "calehr.cli", "web", "--port", str(port),
                              "--workers", "1"])
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/healthz")
    assert f"Using worker: {WORKER_CLASS}" in web.output()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as slow:
        slow.sendall(b"POST /webhooks/calcom HTTP/1.1\r\nHost: x\r\n")  # and nothing more
        started = time.monotonic()
        answer = post_signed(base, fixture_bytes("02_booking_created.json"))
        assert answer.status_code == 202, answer.text
        assert time.monotonic() - started < 5
    assert rclient.exists(f"calehr:event:{answer.json()['event_id']}")


def test_up_tests_and_bench_start_the_same_gunicorn_as_calehr_web() -> None:
    threaded = ["--worker-class", WORKER_CLASS, "--threads", str(THREADS)]
    assert gunicorn_cmd("127.0.0.1:8000", 2)[-4:] == threaded

    class Args:
        host, port, workers, concurrency, mllp_port = "127.0.0.1", 8000, 2, 2, -1

    up_web = _commands(Args(), Path("var"))["web"]
    assert up_web[:len(gunicorn_cmd("127.0.0.1:8000", 2))] == gunicorn_cmd("127.0.0.1:8000", 2)
    assert web_cmd(8000, 2) == gunicorn_cmd("127.0.0.1:8000", 2)
    from bench.stack import BenchStack

    assert BenchStack.web_threads == THREADS
