"""`calehr`: the command line. Heavy imports happen inside each command."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from calehr.webserver import THREADS, gunicorn_cmd
from core.config import ConfigError, Settings


def _settings() -> Settings:
    try:
        return Settings.load()
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_config_check(args: argparse.Namespace) -> int:
    env = dict(os.environ, CALEHR_CONFIG=args.file) if args.file else None
    try:
        s = Settings.load(env)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    print(f"config ok: {s.source}")
    print(f"  targets: {', '.join(f'{t.name} ({t.kind})' for t in s.targets) or 'none'}")
    print(f"  routes: {len(s.routes)}, providers: {len(s.providers)}, "
          f"webhook secrets: {len(s.calcom.webhook_secrets)}, "
          f"encryption keys: {len(s.security.encryption_keys)}")
    print(f"  REDIS_URL: {'set' if s.redis_url else 'not set (calehr up embeds Redis)'}")
    if "whsec_demo_3f9a1c2e7b" in s.calcom.webhook_secrets:
        print("  warning: the DEMO webhook secret is configured; do not use it in production")
    return 0


def cmd_config_schema(args: argparse.Namespace) -> int:
    from calehr.configdoc import schema_text

    sys.stdout.write(schema_text())
    return 0


def cmd_config_table(args: argparse.Namespace) -> int:
    from calehr.configdoc import config_table

    sys.stdout.write(config_table())
    return 0


def _settings_with_redis() -> Settings:
    """For the long-running processes: refuse before exec, not with a traceback after it."""
    from core.redis_client import RedisNotConfigured

    settings = _settings()
    if not settings.redis_url:
        raise RedisNotConfigured()
    return settings


def cmd_web(args: argparse.Namespace) -> int:
    _settings_with_redis()
    cmd = [*gunicorn_cmd(f"{args.host}:{args.port}", args.workers, args.threads),
           "--access-logfile", "-",
           # path only (%(U)s): query strings carry the ICS feed token
           "--access-logformat", '%(h)s %(t)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms',
           "--graceful-timeout", "20", "--timeout", "30"]
    os.execv(sys.executable, cmd)
    return 0  # pragma: no cover


def cmd_worker(args: argparse.Namespace) -> int:
    s = _settings_with_redis()
    cmd = [sys.executable, "-m", "celery", "-A", "calehr.celery_app", "worker", "--loglevel",
           args.loglevel, "-Q", "calehr", "-c", str(args.concurrency or s.worker.concurrency),
           "--without-gossip", "--without-mingle"]
    if args.hostname:
        cmd += ["--hostname", args.hostname]
    os.execv(sys.executable, cmd)
    return 0  # pragma: no cover


def cmd_beat(args: argparse.Namespace) -> int:
    s = _settings_with_redis()
    Path(s.var_dir).mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "celery", "-A", "calehr.celery_app", "beat", "--loglevel",
           args.loglevel, "--schedule", str(Path(s.var_dir) / "celerybeat-schedule")]
    os.execv(sys.executable, cmd)
    return 0  # pragma: no cover


def cmd_up(args: argparse.Namespace) -> int:
    from calehr.up import run_up

    return run_up(args)


def cmd_map(args: argparse.Namespace) -> int:
    from calehr.mapcmd import run_map

    return run_map(_settings(), [Path(f) for f in args.file], args.target)


def cmd_reconcile(args: argparse.Namespace) -> int:
    import json

    from calehr.producer import make_client_runtime
    from worker.tasks import run_reconcile

    settings = _settings()
    if not settings.calcom.api_key:
        print("calcom.api_key is not set: reconciliation needs the Cal.com API", file=sys.stderr)
        return 2
    result = run_reconcile(make_client_runtime(settings))
    print(json.dumps(result))
    return 1 if result.get("error") else 0


def cmd_audit(args: argparse.Namespace) -> int:
    import json
    from datetime import UTC, datetime

    from calehr.producer import make_client_runtime

    rt = make_client_runtime(_settings())
    entries = rt.audit.entries(limit=args.limit, record=args.record, actor=args.actor)
    for e in entries:
        data = e if isinstance(e, dict) else e.__dict__
        if args.json:
            print(json.dumps(data, default=str))
        else:
            when = datetime.fromtimestamp(float(data["ts"]), UTC).strftime("%Y-%m-%d %H:%M:%S")
            print(f"{when}  {data['actor']:<24} {data['action']:<28} {data['record']} "
                  f"{json.dumps(data.get('details') or {}, default=str)}")
    return 0


def cmd_ehr_sim(args: argparse.Namespace) -> int:
    from adapters.hl7v2.ehr_sim import main as sim_main

    return sim_main(args.rest)


def cmd_mllp(args: argparse.Namespace) -> int:
    from adapters.hl7v2.mllp_server import main as mllp_main
    from calehr.wiring import inbound_mllp_app

    argv = ["--host", args.host, "--port", str(args.port)]
    for flag, value in (("--max-frame-bytes", args.max_frame_bytes),
                        ("--idle-timeout", args.idle_timeout),
                        ("--max-connections", args.max_connections)):
        if value is not None:  # unset: [mllp] in the config decides
            argv += [flag, str(value)]
    return mllp_main(argv, make_app=inbound_mllp_app)


def cmd_deadletter(args: argparse.Namespace) -> int:
    from calehr.producer import make_client_runtime
    from deadletter.cli import main as dl_main

    return dl_main(_settings(), args.rest, make_client_runtime)


def cmd_hash_password(args: argparse.Namespace) -> int:
    import getpass

    from werkzeug.security import generate_password_hash

    password = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
    if len(password) < 12:
        print("use at least 12 characters", file=sys.stderr)
        return 2
    print(generate_password_hash(password))
    return 0


def cmd_users(args: argparse.Namespace) -> int:
    from calehr.userscmd import run_users

    return run_users(_settings(), args)


def cmd_status(args: argparse.Namespace) -> int:
    from deadletter.status import run_status

    return run_status(_settings(), args.json)


# commands that parse their own arguments (argparse's REMAINDER drops a leading --option)
PASSTHROUGH = {"ehr-sim": cmd_ehr_sim, "deadletter": cmd_deadletter}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="calehr", description="Cal.com <-> EHR bridge")
    sub = p.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="Redis (embedded if REDIS_URL is unset), web, worker, beat, MLLP")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, default=8000)
    up.add_argument("--workers", type=int, default=2, help="web worker processes")
    up.add_argument("--concurrency", type=int, default=2, help="Celery worker processes")
    up.add_argument("--redis-port", type=int, default=0, help="embedded Redis port (0 = free)")
    up.add_argument("--mllp-port", type=int, default=6661,
                    help="inbound MLLP listener port (-1 = do not start it)")
    up.set_defaults(func=cmd_up)

    web = sub.add_parser("web", help="run the webhook receiver under gunicorn")
    web.add_argument("--host", default="127.0.0.1")
    web.add_argument("--port", type=int, default=8000)
    web.add_argument("--workers", type=int, default=2)
    web.add_argument("--threads", type=int, default=THREADS,
                     help="threads per worker (gthread; calehr/webserver.py says why)")
    web.set_defaults(func=cmd_web)

    wk = sub.add_parser("worker", help="run a Celery worker")
    wk.add_argument("--concurrency", type=int, default=0)
    wk.add_argument("--loglevel", default="INFO")
    wk.add_argument("--hostname", default="")
    wk.set_defaults(func=cmd_worker)

    bt = sub.add_parser("beat", help="run the scheduler (due retries, sweeps)")
    bt.add_argument("--loglevel", default="INFO")
    bt.set_defaults(func=cmd_beat)

    cfg = sub.add_parser("config", help="configuration")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True)
    ck = cfg_sub.add_parser("check", help="parse and validate the config; errors name the key")
    ck.add_argument("file", nargs="?", default="", help="this file instead of CALEHR_CONFIG")
    ck.set_defaults(func=cmd_config_check)
    cfg_sub.add_parser("schema", help="print the config file's JSON Schema (draft 2020-12)"
                       ).set_defaults(func=cmd_config_schema)
    cfg_sub.add_parser("table", help="print the README's configuration table (markdown)"
                       ).set_defaults(func=cmd_config_table)

    mp = sub.add_parser("map", help="print the message(s) a webhook body maps to; sends nothing")
    mp.add_argument("file", nargs="+", help="one body, or one booking's bodies in order")
    mp.add_argument("--target", default=None)
    mp.set_defaults(func=cmd_map)

    rc = sub.add_parser("reconcile", help="ask Cal.com API v2 for changed bookings once")
    rc.set_defaults(func=cmd_reconcile)

    au = sub.add_parser("audit", help="who did what, when, to which record (newest first)")
    au.add_argument("--limit", type=int, default=100)
    au.add_argument("--record", default=None)
    au.add_argument("--actor", default=None)
    au.add_argument("--json", action="store_true")
    au.set_defaults(func=cmd_audit)

    sim = sub.add_parser("ehr-sim", help="an MLLP EHR that ACKs and writes what it got",
                         add_help=False)
    sim.add_argument("rest", nargs=argparse.REMAINDER)
    sim.set_defaults(func=cmd_ehr_sim)

    ml = sub.add_parser("mllp", help="the inbound MLLP listener: SIU from the EHR blocks time")
    ml.add_argument("--host", default="127.0.0.1")
    ml.add_argument("--port", type=int, default=6661, help="0 = any free port (printed)")
    ml.add_argument("--max-frame-bytes", type=int, help="default: [mllp] max_frame_bytes")
    ml.add_argument("--idle-timeout", type=float, help="seconds; default: [mllp]")
    ml.add_argument("--max-connections", type=int, help="default: [mllp] max_connections")
    ml.set_defaults(func=cmd_mllp)

    dl = sub.add_parser("deadletter", help="list|show|replay|discard dead letters",
                        add_help=False)
    dl.add_argument("rest", nargs=argparse.REMAINDER)
    dl.set_defaults(func=cmd_deadletter)
    hp = sub.add_parser("hash-password", help="hash a console password (read from stdin)")
    hp.set_defaults(func=cmd_hash_password)
    from calehr.userscmd import add_parser as users_parser

    users_parser(sub).set_defaults(func=cmd_users)
    st = sub.add_parser("status", help="is the bridge healthy, and if not, where")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv else ""
    if command != "up":  # `up` starts its own Redis; a stale run.json must not redirect it
        from core.runinfo import apply_run_info

        apply_run_info(os.environ)
    if command in PASSTHROUGH:
        args = argparse.Namespace(rest=argv[1:], func=PASSTHROUGH[command])
    else:
        args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except Exception as exc:  # noqa: BLE001 - classified below; anything else is re-raised
        from calehr.clierrors import one_line

        line = one_line(exc, os.environ)
        if line is None:
            raise
        print(line, file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
