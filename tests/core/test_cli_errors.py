"""Outside a `calehr up` folder and without CALEHR_CONFIG / REDIS_URL, every command says in one
line what is missing: no traceback, and never the bundled example's public secrets."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from core.config import ConfigError, Settings
from core.runinfo import RunInfo, write_run_info
from tests.support import ROOT, config_text, fixture_bytes

# every command that reads the config (ehr-sim and hash-password never do; `up` creates one)
NEEDS_CONFIG = [
    ["web"], ["worker"], ["beat"], ["mllp", "--port", "0"], ["config", "check"], ["reconcile"],
    ["audit"], ["map", str(ROOT / "tests/fixtures/calcom/02_booking_created.json")],
    ["deadletter", "list"], ["deadletter", "replay", "--all"], ["users", "list"],
    ["users", "add", "x", "--role", "viewer"], ["status"], ["status", "--json"],
]
# every command that needs Redis (given a config but no Redis)
NEEDS_REDIS = [
    ["web"], ["worker"], ["beat"], ["mllp", "--port", "0"], ["audit"], ["deadletter", "list"], ["deadletter", "show", "dl_x"],
    ["deadletter", "replay", "dl_x"], ["deadletter", "discard", "dl_x", "--reason", "r"],
    ["users", "list"], ["users", "add", "x", "--role", "viewer"], ["users", "remove", "x"],
    ["status"],
]


def run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CALEHR_", "REDIS_"))}
    clean.update(PYTHONPATH=str(ROOT), **env)
    return subprocess.run([sys.executable, "-m", "calehr.cli", *args], cwd=cwd, env=clean,
                          capture_output=True, text=True, timeout=60)


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    return result.stderr


def test_settings_never_fall_back_to_the_bundled_example(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="CALEHR_CONFIG"):
        Settings.load({})


@pytest.mark.parametrize("args", NEEDS_CONFIG, ids=" ".join)
def test_without_a_config_each_command_names_calehr_config(tmp_path: Path, args: list[str]):
    line = one_line(run(args, tmp_path))
    assert "CALEHR_CONFIG" in line and "calehr up" in line


@pytest.mark.parametrize("args", NEEDS_REDIS, ids=" ".join)
def test_without_redis_url_each_command_names_it(tmp_path: Path, args: list[str]):
    config = tmp_path / "c.toml"
    config.write_text(config_text(tmp_path / "outbox"))
    assert "REDIS_URL is not set" in one_line(run(args, tmp_path, CALEHR_CONFIG=str(config)))


# web, worker and beat wait for Redis (the web spools, Celery retries); status reports it down
WAIT_FOR_REDIS = (["web"], ["worker"], ["beat"], ["mllp", "--port", "0"], ["status"])


@pytest.mark.parametrize("args", [a for a in NEEDS_REDIS if a not in WAIT_FOR_REDIS],
                         ids=" ".join)
def test_unreachable_redis_is_one_line(tmp_path: Path, args: list[str]):
    config = tmp_path / "c.toml"
    config.write_text(config_text(tmp_path / "outbox"))
    line = one_line(run(args, tmp_path, CALEHR_CONFIG=str(config), REDIS_URL="redis://:pw@127.0.0.1:1/0"))
    assert "redis://:***@127.0.0.1:1/0" in line and "does not answer" in line and "pw@" not in line


def test_status_reports_unreachable_redis_as_down(tmp_path: Path):
    config = tmp_path / "c.toml"
    config.write_text(config_text(tmp_path / "outbox"))
    result = run(["status", "--json"], tmp_path, CALEHR_CONFIG=str(config),
                 REDIS_URL="redis://127.0.0.1:1/0")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    status = json.loads(result.stdout)
    assert status["problems"] == ["redis is unreachable"]
    assert [(c["name"], c["up"]) for c in status["components"]][0] == ("redis", False)


def test_a_stale_run_json_says_calehr_up_is_not_running(tmp_path: Path):
    config = tmp_path / "var" / "calehr.toml"
    config.parent.mkdir()
    config.write_text(config_text(tmp_path / "outbox"))
    write_run_info(RunInfo(config=str(config), redis_url="redis://127.0.0.1:1/0", pid=2**22 + 7),
                   tmp_path / "var" / "run.json")
    checked = run(["config", "check"], tmp_path)
    assert checked.returncode == 0 and str(config) in checked.stdout  # the config up used
    line = one_line(run(["deadletter", "list"], tmp_path))
    assert "var/run.json" in line and "is not running" in line


def test_ehr_sim_takes_its_options_as_the_readme_shows(tmp_path: Path):
    helped = run(["ehr-sim", "--help"], tmp_path)
    assert helped.returncode == 0 and "--port" in helped.stdout and "--out" in helped.stdout
    with socket.socket() as taken:  # a port in use: the simulator must say so and stop
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = run(["ehr-sim", "--port", str(port), "--out", str(tmp_path / "sim")], tmp_path)
    assert "unrecognized arguments" not in busy.stderr
    assert busy.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in busy.stderr


def test_map_works_with_a_config(tmp_path: Path):
    config = tmp_path / "c.toml"
    config.write_text(config_text(tmp_path / "outbox"))
    (tmp_path / "b.json").write_bytes(fixture_bytes("02_booking_created.json"))
    mapped = run(["map", str(tmp_path / "b.json")], tmp_path, CALEHR_CONFIG=str(config))
    assert mapped.returncode == 0 and "SIU^S12" in mapped.stdout
