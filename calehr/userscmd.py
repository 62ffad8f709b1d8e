"""`calehr users add|list|set-role|reset-password|remove`: the console's local users."""

from __future__ import annotations

import argparse
import getpass
import json
import sys

from core.audit import cli_actor
from core.config import Settings
from core.redis_client import make_redis
from core.users import ROLES, UserError, UserStore, new_password

MIN_PASSWORD = 12


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    us = sub.add_parser("users", help="console users: add|list|set-role|reset-password|remove")
    u = us.add_subparsers(dest="users_command", required=True)
    add = u.add_parser("add", help="add a user; prints a random password unless --password-stdin")
    add.add_argument("username")
    add.add_argument("--role", choices=ROLES, required=True)
    add.add_argument("--password-stdin", action="store_true",
                     help="read the password from stdin instead of generating one")
    ls = u.add_parser("list", help="user names, roles and where each is defined")
    ls.add_argument("--json", action="store_true")
    sr = u.add_parser("set-role", help="change a user's role (takes effect on the next request)")
    sr.add_argument("username")
    sr.add_argument("role", choices=ROLES)
    rp = u.add_parser("reset-password", help="set a new random password (printed once)")
    rp.add_argument("username")
    rp.add_argument("--password-stdin", action="store_true")
    rm = u.add_parser("remove", help="remove a user; their sessions end at the next request")
    rm.add_argument("username")
    return us


def _password(from_stdin: bool) -> tuple[str, bool]:
    """(password, generated)."""
    if not from_stdin:
        return new_password(), True
    text = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline()
    text = text.rstrip("\n")
    if len(text) < MIN_PASSWORD:
        raise UserError(f"use at least {MIN_PASSWORD} characters")
    return text, False


def run_users(settings: Settings, args: argparse.Namespace) -> int:
    code = _run(UserStore.for_settings(make_redis(settings), settings), args)
    if code == 0 and not settings.console.secret_key:
        print("note: the console is off until [console] secret_key is set in "
              f"{settings.source}", file=sys.stderr)
    return code


def _run(store: UserStore, args: argparse.Namespace) -> int:
    actor = cli_actor()
    cmd = args.users_command
    try:
        if cmd == "list":
            users = store.list()
            if args.json:
                for u in users:
                    print(json.dumps({"username": u.username, "role": u.role, "source": u.source}))
            else:
                for u in users:
                    print(f"{u.username:<32} {u.role:<9} {u.source}")
                if not users:
                    print("no console users; add one with `calehr users add NAME --role admin`")
            return 0
        if cmd == "add":
            password, generated = _password(args.password_stdin)
            store.add(args.username, args.role, password, actor)
            print(f"added {args.username} ({args.role})")
        elif cmd == "set-role":
            store.set_role(args.username, args.role, actor)
            print(f"{args.username} is now {args.role}")
            return 0
        elif cmd == "reset-password":
            password, generated = _password(args.password_stdin)
            store.set_password(args.username, password, actor)
            print(f"new password set for {args.username}")
        else:
            store.remove(args.username, actor)
            print(f"removed {args.username}")
            return 0
    except UserError as exc:
        print(f"calehr users: {exc}", file=sys.stderr)
        return 2
    if generated:
        print(f"password: {password}")
        print("  (shown only now, stored only as a hash)")
    return 0
