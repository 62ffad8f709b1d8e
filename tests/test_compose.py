"""compose.yaml against the Compose Specification (no Docker engine or compose plugin here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_compose_file_is_valid_against_the_compose_spec():
    checker = Path(sys.executable).with_name("check-jsonschema")
    run = subprocess.run([str(checker), "--builtin-schema", "vendor.compose-spec",
                          str(ROOT / "compose.yaml")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr


def test_compose_runs_every_part_with_healthchecks_and_durable_redis():
    spec = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = spec["services"]
    assert {"redis", "web", "worker", "beat", "mllp", "ehr-sim"} <= set(services)
    redis_cmd = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis_cmd and "--appendfsync always" in redis_cmd
    assert "--maxmemory-policy noeviction" in redis_cmd
    assert services["worker"]["deploy"]["replicas"] == 2
    assert services["ehr-sim"]["profiles"] == ["demo"]
    for name, service in services.items():
        assert "healthcheck" in service, name
