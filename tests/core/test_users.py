"""`calehr users`: console users in Redis, audited, honoured by the real console (gunicorn)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import redis

from core.audit import AuditLog
from core.config import UserSettings
from core.users import UserError, UserStore
from tests.deadletter.console_support import ConsoleClient, console_config
from tests.support import ROOT, free_port


def audit(r: redis.Redis) -> list[dict]:
    return [json.loads(e) for e in r.lrange("calehr:audit", 0, -1)]


def test_store_keeps_only_hashes_audits_every_change_and_config_users_win(rclient):
    configured = (UserSettings("ada", "scrypt:x", "admin"),)
    store = UserStore(rclient, "calehr", configured, AuditLog(rclient))
    store.add("nina", "viewer", "a long password 1", "cli:root")
    raw = rclient.hget("calehr:console:users", "nina")
    assert b"a long password 1" not in raw and json.loads(raw)["password_hash"].startswith("scrypt:")
    store.set_role("nina", "operator", "cli:root")
    store.set_password("nina", "another password 2", "cli:root")
    assert store.get("nina").role == "operator"
    assert [(u.username, u.role, u.source) for u in store.list()] == [
        ("ada", "admin", "config"), ("nina", "operator", "redis")]
    with pytest.raises(UserError, match="already exists"):
        store.add("nina", "viewer", "x" * 12, "cli:root")
    with pytest.raises(UserError, match="config"):
        store.set_role("ada", "viewer", "cli:root")
    with pytest.raises(UserError, match="config"):
        store.add("ada", "viewer", "x" * 12, "cli:root")
    with pytest.raises(UserError, match="role must be"):
        store.add("zed", "root", "x" * 12, "cli:root")
    with pytest.raises(UserError, match="user name"):
        store.add("oidc:zed", "viewer", "x" * 12, "cli:root")
    store.remove("nina", "cli:root")
    assert store.get("nina") is None
    with pytest.raises(UserError, match="no user"):
        store.remove("nina", "cli:root")
    actions = [(e["action"], e["record"], e["details"]) for e in reversed(audit(rclient))]
    assert actions == [("users.add", "user:nina", {"role": "viewer"}),
                       ("users.set_role", "user:nina", {"role": "operator"}),
                       ("users.reset_password", "user:nina", {}),
                       ("users.remove", "user:nina", {})]
    assert all(e["actor"] == "cli:root" for e in audit(rclient))


@pytest.mark.slow
def test_cli_users_are_signed_in_by_the_console_and_changes_apply_at_once(stack, outbox, rclient):
    stack.write_config(console_config(outbox, free_port()))
    base = stack.web()

    def users(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "calehr.cli", "users", *args], env=stack.env,
                              cwd=ROOT, input=stdin, capture_output=True, text=True, timeout=60)

    added = users("add", "nina", "--role", "viewer")
    assert added.returncode == 0, added.stderr
    password = added.stdout.split("password: ")[1].split()[0]
    nina = ConsoleClient(base)
    assert nina.login("nina", password).status_code == 302
    assert 'class="role role-viewer"' in nina.get("/console/deadletters").text
    assert nina.get("/console/audit").status_code == 403

    assert users("set-role", "nina", "admin").returncode == 0
    assert nina.get("/console/audit").status_code == 200  # the next request has the new role

    assert users("reset-password", "nina", "--password-stdin", stdin="short\n").returncode == 2
    assert users("reset-password", "nina", "--password-stdin",
                 stdin="nina's new password 7\n").returncode == 0
    assert ConsoleClient(base).login("nina", password).status_code == 401
    assert ConsoleClient(base).login("nina", "nina's new password 7").status_code == 302

    listed = users("list", "--json")
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert {"username": "vera", "role": "viewer", "source": "config"} in rows
    assert {"username": "nina", "role": "admin", "source": "redis"} in rows
    refused = users("set-role", "vera", "admin")
    assert refused.returncode == 2 and "[[users]]" in refused.stderr

    assert users("remove", "nina").returncode == 0
    gone = nina.get("/console/deadletters", allow_redirects=False)
    assert gone.status_code == 302 and "/console/login" in gone.headers["Location"]
    actions = [e["action"] for e in audit(rclient) if e["record"] == "user:nina"]
    assert actions == ["users.remove", "users.reset_password", "users.set_role", "users.add"]
