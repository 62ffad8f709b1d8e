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


def test_ha_profile_runs_master_replica_three_sentinels_two_webs_two_workers_and_one_beat():
    from core.redis_url import parse_sentinel_url

    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    ha = {name: s for name, s in services.items() if s.get("profiles") == ["ha"]}
    sentinels = [n for n, s in ha.items() if "redis-sentinel" in " ".join(s.get("command", []))]
    assert len(sentinels) == 3
    master, replica = " ".join(ha["redis-master"]["command"]), " ".join(ha["redis-replica"]["command"])
    replica_2 = " ".join(ha["redis-replica-2"]["command"])  # WAIT 1 met right after a promotion
    assert "--replicaof redis-master 6379" in replica and "--replicaof" not in master
    assert "--replicaof redis-master 6379" in replica_2
    for cmd in (master, replica, replica_2):
        assert "--appendonly yes" in cmd and "--maxmemory-policy noeviction" in cmd
        assert "--min-replicas-to-write 1" in cmd
    monitor = " ".join(ha[sentinels[0]]["command"])
    assert "sentinel monitor calehr redis-master 6379 2" in monitor
    bridge = {n: s for n, s in ha.items() if s.get("image") == "cal-ehr-bridge:latest"}
    webs = [n for n, s in bridge.items() if s["command"][:2] == ["calehr", "web"]]
    assert len(webs) == 2
    assert len({s["volumes"][-1] for n, s in bridge.items() if n in webs}) == 2  # own spools
    workers = [s for s in bridge.values() if "worker" in s["command"]]
    assert len(workers) == 1 and workers[0]["deploy"]["replicas"] == 2
    assert sum("beat" in s["command"] for s in bridge.values()) == 1
    for name, service in bridge.items():
        url = parse_sentinel_url(service["environment"]["REDIS_URL"])
        assert url.master_name == "calehr" and len(url.sentinels) == 3, name
        assert set(service["depends_on"]) == set(sentinels), name
    for name, service in ha.items():
        assert "healthcheck" in service, name
    assert not any(s.get("profiles") for n, s in services.items() if n in
                   ("redis", "web", "worker", "beat", "mllp"))  # the single-Redis layout as it was


def test_every_web_in_compose_runs_calehr_web_so_it_gets_the_threaded_workers():
    """`calehr web` builds gunicorn's command line (calehr/webserver.py: gthread workers); a
    service that called gunicorn itself would run other settings than the ones measured."""
    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    webs = {n: s["command"] for n, s in services.items() if "web" in n}
    assert set(webs) == {"web", "web-ha-1", "web-ha-2"}
    for name, command in webs.items():
        assert command[:2] == ["calehr", "web"], name
        assert "--threads" not in command and "--worker-class" not in command, name
    assert not any("gunicorn" in " ".join(s.get("command") or []) for s in services.values())
