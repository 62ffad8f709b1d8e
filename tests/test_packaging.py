"""The bridge installed without extras, as `scripts/run` installs it: every module imports, `up` starts.

The test extra hides missing runtime dependencies (icalendar once lived only there), so this builds a
fresh venv with `pip install .` and nothing else.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import requests

from tests.support import ROOT, config_text, fixture_bytes, free_port, post_signed, wait_for, wait_http

pytestmark = pytest.mark.slow
PACKAGES = ("core", "adapters", "worker", "webhooks", "deadletter", "calehr")
IMPORT_ALL = f"""
import importlib, pkgutil
names = []
for top in {PACKAGES!r}:
    pkg = importlib.import_module(top)
    names.append(top)
    for info in pkgutil.walk_packages(pkg.__path__, top + "."):
        importlib.import_module(info.name)
        names.append(info.name)
print(len(names))
"""


@pytest.fixture(scope="module")
def runtime_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("runtime-venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                          str(ROOT)], capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stderr[-3000:]
    return venv


def test_every_module_imports_without_the_test_extra(runtime_venv: Path, tmp_path: Path):
    # the Celery module builds its app from settings at import (for `celery -A`); nothing connects
    config = tmp_path / "calehr.toml"
    config.write_text(config_text(tmp_path / "outbox"))
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("CALEHR_", "REDIS_"))},
           "CALEHR_CONFIG": str(config), "REDIS_URL": "redis://127.0.0.1:9/0"}
    run = subprocess.run([str(runtime_venv / "bin" / "python"), "-c", IMPORT_ALL], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    assert int(run.stdout.strip()) > 40  # the five packages and their modules, not an empty walk
    pytest_there = subprocess.run([str(runtime_venv / "bin" / "python"), "-c", "import pytest"],
                                  capture_output=True, timeout=60)
    assert pytest_there.returncode != 0  # really without the test extra


def test_up_from_the_runtime_install_delivers_a_signed_fixture(runtime_venv: Path, tmp_path: Path):
    port, mllp_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CALEHR_", "REDIS_", "PYTHON", "VIRTUAL_ENV"))}
    log = tmp_path / "up.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(runtime_venv / "bin" / "calehr"), "up", "--port", str(port),
                                 "--mllp-port", str(mllp_port)],
                                cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/readyz", 120)
        assert requests.get(f"{base}/readyz", timeout=5).json()["redis"] == "ok"
        config = tomllib.loads((tmp_path / "var" / "calehr.toml").read_text())
        secret = config["calcom"]["webhook_secrets"][0]
        resp = post_signed(base, fixture_bytes("02_booking_created.json"), secret=secret)
        assert resp.status_code == 202, resp.text
        files = wait_for(lambda: list((tmp_path / "var" / "outbox").glob("*.hl7")), 90,
                         message="an SIU file in var/outbox")
        assert b"SIU^S12^SIU_S12" in files[0].read_bytes()
        assert proc.poll() is None, log.read_text()[-3000:]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
