"""Issue 17 finding 3: the login throttle is per (user name, client address), grows, never
locks the admin out from elsewhere, cannot be slipped past in parallel, and failed-login
noise is one aggregated audit entry that never evicts what people did.

Over real HTTP (gunicorn) from two loopback source addresses (127.0.0.1 and 127.0.0.2).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from requests.adapters import HTTPAdapter

from core.audit import AuditLog
from deadletter.console.throttle import LoginThrottle
from tests.deadletter.console_support import ConsoleClient, console_config
from tests.support import free_port, wait_for, wait_http, web_cmd

FREE, BASE = 3, 0.4


class _From(HTTPAdapter):
    """Connect from a chosen loopback source address (all of 127/8 is loopback)."""

    def __init__(self, source: str) -> None:
        self.source = source
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = (self.source, 0)
        return super().init_poolmanager(*args, **kwargs)


def client(base: str, source: str = "127.0.0.1") -> ConsoleClient:
    c = ConsoleClient(base)
    c.http.mount("http://", _From(source))
    c.get("/console/login")
    return c


def start_web(stack, outbox, base_delay: float) -> str:
    text = console_config(outbox, free_port()).replace(
        "session_minutes = 30", f"session_minutes = 30\nlogin_free_attempts = {FREE}\n"
        f"login_base_delay_seconds = {base_delay}\nlogin_max_delay_seconds = 60")
    stack.write_config(text)
    port = free_port()
    stack.start("web", web_cmd(port, workers=4))
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/healthz")
    return url


@pytest.fixture
def base(stack, outbox) -> str:
    return start_web(stack, outbox, BASE)


def wrong(c: ConsoleClient, user: str = "ada"):
    return c.post("/console/login", {"username": user, "password": "guess"},
                  allow_redirects=False)


def test_guesses_from_elsewhere_never_lock_the_admin_out(stack, outbox):
    base = start_web(stack, outbox, 60)  # no wait ends during the test, however slow the host
    attacker = client(base, "127.0.0.2")
    answers = [wrong(attacker).status_code for _ in range(FREE + 1)]
    assert answers == [401] * FREE + [429]
    admin = client(base, "127.0.0.1")
    ok = admin.post("/console/login", {"username": "ada", "password": "admin-pass-12345"},
                    allow_redirects=False)
    assert ok.status_code == 302  # the real admin, from her own address, gets in at once


def test_delays_grow_and_always_end(stack, outbox):
    base = start_web(stack, outbox, 1.0)
    c = client(base, "127.0.0.2")
    for _ in range(FREE - 1):
        assert wrong(c).status_code == 401
    blocked = 0

    def one_try() -> tuple[float, float] | None:
        nonlocal blocked
        sent = time.monotonic()
        code = wrong(c).status_code
        if code == 401:
            return sent, time.monotonic()
        assert code == 429
        blocked += 1  # polling does not lengthen the wait
        return None

    # try FREE is let in at once; each let-in sets the next wait (1 s, 2 s, 4 s)
    let_in = [wait_for(one_try, 30, 0.05, "a try to be let in") for _ in range(4)]
    # answered(k+1) >= reserved(k+1) >= reserved(k) + wait(k) >= sent(k) + wait(k): lower
    # bounds only, so load can make a wait longer, never make this fail
    gaps = [later[1] - earlier[0] for earlier, later in zip(let_in, let_in[1:], strict=False)]
    assert gaps[0] >= 1.0 and gaps[1] >= 2.0 and gaps[2] >= 4.0, gaps
    assert gaps[2] < 30 and blocked > 0


def test_parallel_guesses_cannot_slip_past_the_limit(stack, outbox):
    base = start_web(stack, outbox, 60)  # no delay ends while the 24 tries run
    clients = [client(base, "127.0.0.2") for _ in range(24)]
    gate = threading.Barrier(24)

    def go(c):
        gate.wait()
        return wrong(c).status_code

    with ThreadPoolExecutor(24) as pool:
        codes = list(pool.map(go, clients))
    assert codes.count(401) == FREE and codes.count(429) == 24 - FREE, codes


def test_throttle_reservation_is_atomic_under_threads(rclient):
    throttle = LoginThrottle(rclient, "calehr", free_attempts=10, base_delay=60)
    gate = threading.Barrier(48)

    def go(_):
        gate.wait()
        return throttle.attempt("ada", "10.0.0.9").allowed

    with ThreadPoolExecutor(48) as pool:
        allowed = sum(pool.map(go, range(48)))
    assert allowed == 10
    assert throttle.attempt("ada", "10.0.0.8").allowed  # another address is not affected


def test_failures_are_one_audit_entry_and_never_evict_peoples_actions(base, rclient):
    admin = client(base, "127.0.0.1")
    assert admin.post("/console/login", {"username": "ada", "password": "admin-pass-12345"},
                      allow_redirects=False).status_code == 302
    attacker = client(base, "127.0.0.2")
    passed = sum(wrong(attacker).status_code == 401 for _ in range(40))
    log = AuditLog(rclient, "calehr")
    failed = [e for e in log.entries(limit=1000) if e.action == "console.login_failed"]
    assert len(failed) == 1
    assert failed[0].details["attempts"] == 40 and failed[0].details["blocked"] == 40 - passed
    assert failed[0].details["address"] == "127.0.0.2" and failed[0].actor == "console:ada"
    for i in range(50):  # the bridge's own entries flood the count-capped list
        log.record("system", "event.accepted", f"ev_{i}")
    log.trim(max_age_seconds=365 * 86400, system_entries=10)
    actions = [e.action for e in log.entries(limit=1000)]
    assert "console.login" in actions and actions.count("event.accepted") == 10
    assert actions.count("console.login_failed") == 1
    assert log.trim(max_age_seconds=-1, system_entries=10) >= 2  # by age: everything older goes
    assert "console.login" not in [e.action for e in log.entries(limit=1000)]
