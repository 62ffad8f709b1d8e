"""`calehr up`: every process on one machine, supervised, for a first installation and demos.

First start in a folder: writes var/calehr.toml from the example with fresh secrets (webhook
secret, Fernet key, ICS tokens, console secret), creates the console's first `admin` user and
prints its password once. Every start: records var/run.json so other `calehr` commands in
the folder find this config and this Redis; restarts a child that dies (with backoff).
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import signal
import sys
from importlib import resources
from pathlib import Path

from calehr.supervise import Supervisor
from calehr.webserver import gunicorn_cmd
from core.config import ConfigError, Settings
from core.crypto import new_key
from core.embedded_redis import EmbeddedRedis
from core.runinfo import RUN_FILE, RunInfo, read_run_info, write_run_info

DEMO_SECRET = "whsec_demo_3f9a1c2e7b"  # noqa: S105 - the public example value we replace
SYSTEM_ACTOR = "system:calehr-up"


def ensure_config(var_dir: Path) -> Path | None:
    """No config given: write var/calehr.toml from the example, with fresh secrets."""
    if os.environ.get("CALEHR_CONFIG") or Path("calehr.toml").exists():
        return None
    path = var_dir / "calehr.toml"
    if not path.exists():
        var_dir.mkdir(parents=True, exist_ok=True)
        text = resources.files("core").joinpath("example.toml").read_text("utf-8")
        path.write_text(fresh_config_text(text), "utf-8")
        path.chmod(0o600)
    return path


def fresh_config_text(example: str) -> str:
    """The example with every published secret replaced, and a console secret added."""
    text = example.replace(DEMO_SECRET, "whsec_" + secrets.token_hex(16))
    text = re.sub(r'encryption_keys = \["[^"]+"\]', f'encryption_keys = ["{new_key()}"]', text)
    text = re.sub(r'ics_token = "[^"]*"', lambda _m: f'ics_token = "{secrets.token_urlsafe(24)}"',
                  text)
    if not re.search(r"^\[console\]", text, re.M):
        text += ("\n[console]\n# Signs console sessions. Users: `calehr users add NAME --role ROLE`.\n"
                 f'secret_key = "{secrets.token_hex(32)}"\n')
    return text


def _up_running(info: RunInfo | None) -> bool:
    if info is None or info.pid == os.getpid():
        return False
    try:
        cmdline = Path(f"/proc/{info.pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"calehr" in cmdline or b"calehr.cli" in cmdline


def first_admin(settings: Settings) -> str | None:
    """Creates `admin` with a random password when the console has no user yet."""
    from core.redis_client import make_redis
    from core.users import UserStore, new_password

    if not settings.console.secret_key:
        return None
    store = UserStore.for_settings(make_redis(settings), settings)
    if store.count():
        return None
    password = new_password()
    store.add("admin", "admin", password, SYSTEM_ACTOR)
    return password


def _commands(args: argparse.Namespace, var_dir: Path) -> dict[str, list[str]]:
    py = sys.executable
    commands = {
        "web": [*gunicorn_cmd(f"{args.host}:{args.port}", args.workers), "--graceful-timeout", "10"],
        "worker": [py, "-m", "celery", "-A", "calehr.celery_app", "worker", "-Q", "calehr",
                   "-c", str(args.concurrency), "--loglevel", "INFO", "--without-gossip",
                   "--without-mingle", "--hostname", f"calehr-up-{os.getpid()}@%h"],
        "beat": [py, "-m", "celery", "-A", "calehr.celery_app", "beat", "--loglevel", "INFO",
                 "--schedule", str(var_dir / "celerybeat-schedule")],
    }
    if getattr(args, "mllp_port", -1) >= 0:
        commands["mllp"] = [py, "-m", "calehr.cli", "mllp", "--host", args.host,
                            "--port", str(args.mllp_port)]
    return commands


def say(text: str) -> None:
    print(f"calehr up: {text}", flush=True)


def run_up(args: argparse.Namespace) -> int:
    var_dir = Path("var")
    running = read_run_info()
    if _up_running(running):
        print(f"calehr up already runs in this folder (pid {running.pid}, {RUN_FILE})",
              file=sys.stderr)
        return 2
    config_path = ensure_config(var_dir)
    env = dict(os.environ)
    if config_path:
        env["CALEHR_CONFIG"] = str(config_path.resolve())
    try:
        Settings.load(env)  # refuse a broken config before starting anything
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    redis_srv: EmbeddedRedis | None = None
    if not env.get("REDIS_URL"):
        redis_srv = EmbeddedRedis(var_dir / "redis", args.redis_port)
        redis_srv.start()
        env["REDIS_URL"] = redis_srv.url
    settings = Settings.load(env)
    for t in settings.targets:
        if t.kind == "file":
            Path(t.path).mkdir(parents=True, exist_ok=True)
    base = f"http://{args.host}:{args.port}"
    console_url = f"{base}/console/" if settings.console.secret_key else ""
    write_run_info(RunInfo(config=str(Path(env.get("CALEHR_CONFIG") or "calehr.toml").resolve()),
                           redis_url=env["REDIS_URL"], pid=os.getpid(), web_url=base,
                           console_url=console_url))
    sup = Supervisor(env, log=say)
    for name, cmd in _commands(args, var_dir).items():
        sup.add(name, cmd)
    if redis_srv is not None:
        sup.watch_redis(redis_srv)

    signal.signal(signal.SIGTERM, sup.request_stop)
    signal.signal(signal.SIGINT, sup.request_stop)
    try:
        password = first_admin(settings)
        sup.start_all()
        _banner(settings, env, base, console_url, password, redis_srv is not None, args)
        sup.run(ready_url=f"{base}/readyz")
    finally:
        sup.stop_all()
        if redis_srv:
            redis_srv.stop()
        say("stopped")
    return 0


def _banner(settings: Settings, env: dict[str, str], base: str, console_url: str,
            password: str | None, embedded: bool, args: argparse.Namespace) -> None:
    say(f"config {settings.source}")
    say(f"redis {'embedded at ' + env['REDIS_URL'] if embedded else 'REDIS_URL'}")
    say(f"other calehr commands in this folder use both (recorded in {RUN_FILE})")
    for t in settings.targets:
        where = t.path if t.kind == "file" else (t.url or f"{t.host}:{t.port}")
        say(f"EHR target {t.name} ({t.kind}) -> {where}")
    say(f"give Cal.com this webhook URL: {base}/webhooks/calcom")
    say(f"and this secret: {settings.calcom.webhook_secrets[0]}")
    say(f"health: {base}/readyz (\"ready\" is printed once it answers)")
    if getattr(args, "mllp_port", -1) >= 0:
        say(f"EHR SIU in (MLLP) on {args.host}:{args.mllp_port}; busy-time feeds at "
            f"{base}/calendars/<provider>.ics?token=…")
    if not console_url:
        say("console off: set [console] secret_key in the config to turn it on")
        return
    say(f"console {console_url}")
    if password:
        say("first console user: admin")
        say(f"password: {password}")
        say("  (shown only now, stored only as a hash; `calehr users reset-password admin` "
            "makes a new one)")
    say("add staff with `calehr users add NAME --role viewer|operator|admin`; "
        "`calehr users list` shows them")
    say("status: `calehr status`; stop with Ctrl-C")
