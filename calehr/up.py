"""`calehr up`: every process on one machine, for development and demos."""

from __future__ import annotations

import argparse
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

from core.config import ConfigError, Settings
from core.crypto import new_key
from core.embedded_redis import EmbeddedRedis

DEMO_SECRET = "whsec_demo_3f9a1c2e7b"  # noqa: S105 - the public example value we replace


def ensure_config(var_dir: Path) -> Path | None:
    """No config given: write var/calehr.toml from the example, with fresh secret and key."""
    if os.environ.get("CALEHR_CONFIG") or Path("calehr.toml").exists():
        return None
    path = var_dir / "calehr.toml"
    if not path.exists():
        var_dir.mkdir(parents=True, exist_ok=True)
        text = resources.files("core").joinpath("example.toml").read_text("utf-8")
        text = text.replace(DEMO_SECRET, "whsec_" + secrets.token_hex(16))
        text = re.sub(r'encryption_keys = \["[^"]+"\]', f'encryption_keys = ["{new_key()}"]', text)
        path.write_text(text, "utf-8")
        path.chmod(0o600)
    return path


def run_up(args: argparse.Namespace) -> int:
    var_dir = Path("var")
    config_path = ensure_config(var_dir)
    env = dict(os.environ)
    if config_path:
        env["CALEHR_CONFIG"] = str(config_path)
    redis_srv: EmbeddedRedis | None = None
    if not env.get("REDIS_URL"):
        redis_srv = EmbeddedRedis(var_dir / "redis", args.redis_port)
        redis_srv.start()
        env["REDIS_URL"] = redis_srv.url
    try:
        settings = Settings.load(env)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        if redis_srv:
            redis_srv.stop()
        return 2
    for t in settings.targets:
        if t.kind == "file":
            Path(t.path).mkdir(parents=True, exist_ok=True)

    py = sys.executable
    commands = {
        "web": [py, "-m", "gunicorn", "calehr.wsgi:app", "--bind", f"{args.host}:{args.port}",
                "--workers", str(args.workers), "--graceful-timeout", "10"],
        "worker": [py, "-m", "celery", "-A", "calehr.celery_app", "worker", "-Q", "calehr",
                   "-c", str(args.concurrency), "--loglevel", "INFO", "--without-gossip",
                   "--without-mingle", "--hostname", f"calehr-up-{os.getpid()}@%h"],
        "beat": [py, "-m", "celery", "-A", "calehr.celery_app", "beat", "--loglevel", "INFO",
                 "--schedule", str(var_dir / "celerybeat-schedule")],
    }
    mllp_port = getattr(args, "mllp_port", -1)
    if mllp_port >= 0:
        commands["mllp"] = [py, "-m", "calehr.cli", "mllp", "--host", args.host,
                            "--port", str(mllp_port)]
    procs: dict[str, subprocess.Popen[bytes]] = {}
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    code = 0
    try:
        for name, cmd in commands.items():
            procs[name] = subprocess.Popen(cmd, env=env)
        base = f"http://{args.host}:{args.port}"
        print(f"calehr up: config {settings.source}", flush=True)
        print(f"calehr up: redis {'embedded at ' + env['REDIS_URL'] if redis_srv else 'REDIS_URL'}",
              flush=True)
        for t in settings.targets:
            where = t.path if t.kind == "file" else (t.url or f"{t.host}:{t.port}")
            print(f"calehr up: EHR target {t.name} ({t.kind}) -> {where}", flush=True)
        print(f"calehr up: give Cal.com this webhook URL: {base}/webhooks/calcom", flush=True)
        print(f"calehr up: and this secret: {settings.calcom.webhook_secrets[0]}", flush=True)
        print(f"calehr up: ready check {base}/readyz", flush=True)
        if mllp_port >= 0:
            print(f"calehr up: EHR SIU in (MLLP) on {args.host}:{mllp_port}; busy-time feeds at "
                  f"{base}/calendars/<provider>.ics?token=…", flush=True)
        while not stopping:
            for name, p in procs.items():
                if p.poll() is not None:
                    print(f"calehr up: {name} exited with {p.returncode}; stopping", flush=True)
                    code = 1
                    stopping = True
            time.sleep(0.2)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.terminate()
        deadline = time.monotonic() + 15
        for p in procs.values():
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
        if redis_srv:
            redis_srv.stop()
    return code
