"""`calehr deadletter list|show|replay|discard`: the support desk's command line."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime

from core.audit import cli_actor
from core.config import Settings
from core.deadletters import STAGES, STATES, DeadLetter, DeadLetterFilter, parse_utc
from core.runtime import RuntimeFactory
from deadletter.replay import ReplayError, discard, replay


def _time(value: str) -> float:
    ts = parse_utc(value)
    if ts is None:
        raise argparse.ArgumentTypeError(f"not an ISO time: {value}")
    return ts


def _filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state", choices=STATES)
    p.add_argument("--target")
    p.add_argument("--stage", choices=STAGES)
    p.add_argument("--error-code")
    p.add_argument("--appointment", help="appointment key")
    p.add_argument("--since", type=_time, help="ISO time")
    p.add_argument("--until", type=_time, help="ISO time")


def _flt(a: argparse.Namespace) -> DeadLetterFilter:
    return DeadLetterFilter(state=a.state, target=a.target, stage=a.stage, error_code=a.error_code,
                            appointment_key=a.appointment, since=a.since, until=a.until)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="calehr deadletter")
    sub = p.add_subparsers(dest="cmd", required=True)
    ls = sub.add_parser("list", help="list dead letters, newest first")
    _filters(ls)
    ls.add_argument("--limit", type=int, default=50)
    ls.add_argument("--offset", type=int, default=0)
    ls.add_argument("--json", action="store_true")
    sh = sub.add_parser("show", help="one dead letter with its attempts and audit trail")
    sh.add_argument("id")
    sh.add_argument("--json", action="store_true")
    sh.add_argument("--reveal", action="store_true", help="print the wire message (PHI; audited)")
    rp = sub.add_parser("replay", help="replay ids, or every open one matching the filters")
    rp.add_argument("ids", nargs="*")
    _filters(rp)
    rp.add_argument("--all", action="store_true", help="replay every open match of the filters")
    rp.add_argument("--force", action="store_true", help="send even if a later change was applied")
    rp.add_argument("--json", action="store_true")
    dc = sub.add_parser("discard", help="close a dead letter without sending it")
    dc.add_argument("ids", nargs="+")
    dc.add_argument("--reason", required=True)
    return p


def _row(d: DeadLetter) -> str:
    when = datetime.fromtimestamp(d.created_at, UTC).strftime("%Y-%m-%d %H:%M:%S")
    return (f"{d.id:<20} {when}  {d.state:<9} {d.stage:<9} {d.target or '-':<12} "
            f"{d.error_code:<22} {d.appointment_key}")


def main(settings: Settings, argv: list[str], make_runtime: RuntimeFactory) -> int:
    args = parser().parse_args(argv)
    rt = make_runtime(settings)
    actor = cli_actor()
    store = rt.deadletters

    if args.cmd == "list":
        rows, total = store.list(_flt(args), offset=args.offset, limit=args.limit)
        if args.json:
            print(json.dumps({"total": total, "items": [r.to_json() for r in rows]}))
        else:
            print(f"{total} dead letter(s)")
            for r in rows:
                print(_row(r))
        return 0

    if args.cmd == "show":
        d = store.get(args.id)
        if d is None:
            print(f"no dead letter {args.id}", file=sys.stderr)
            return 1
        data = d.to_json()
        if args.reveal:
            wire = store.wire(d.id)
            data["wire"] = wire.decode("utf-8", "replace").replace("\r", "\n") if wire else None
            store.note(d.id, actor, "reveal")
            rt.audit.record(actor, "deadletter.reveal", d.id)
        if args.json:
            print(json.dumps(data, default=str))
            return 0
        print(_row(d))
        print(f"error: {d.error_class}: {d.error_text}")
        print(f"event {d.event_id}  delivery {d.delivery_id or '-'}  {d.message_event}")
        for a in d.attempts:
            print(f"  attempt {a.get('n')}: {a.get('outcome')} ack={a.get('ack_code')} "
                  f"{a.get('duration_ms')}ms {a.get('detail')}")
        for a in d.audit:
            when = datetime.fromtimestamp(a["ts"], UTC).strftime("%Y-%m-%d %H:%M:%S")
            print(f"  {when} {a['actor']}: {a['action']} {a.get('details') or ''}")
        if args.reveal:
            print(data["wire"] or "(no wire message)")
        return 0

    if args.cmd == "replay":
        ids = list(args.ids)
        if args.all:
            flt = _flt(args)
            flt = DeadLetterFilter(**{**flt.__dict__, "state": "open"})
            ids += [d.id for d in store.list(flt, limit=10**9)[0]]
        if not ids:
            print("nothing to replay: give ids or --all with filters", file=sys.stderr)
            return 2
        done, failed = 0, []
        for i, dl_id in enumerate(ids, 1):
            try:
                replay(rt, dl_id, actor, force=args.force)
                done += 1
            except ReplayError as exc:
                failed.append({"id": dl_id, "error": str(exc)})
            if not args.json:
                bar = "#" * int(30 * i / len(ids))
                print(f"\rreplaying [{bar:<30}] {i}/{len(ids)}", end="", file=sys.stderr, flush=True)
        if not args.json:
            print(file=sys.stderr)
        result = {"replayed": done, "failed": failed}
        print(json.dumps(result) if args.json else
              f"replayed {done}, failed {len(failed)}" +
              "".join(f"\n  {f['id']}: {f['error']}" for f in failed))
        return 0 if not failed else 1

    if args.cmd == "discard":
        failed = 0
        for dl_id in args.ids:
            try:
                discard(rt, dl_id, actor, args.reason)
                print(f"discarded {dl_id}")
            except ReplayError as exc:
                print(f"{dl_id}: {exc}", file=sys.stderr)
                failed += 1
        return 1 if failed else 0
    return 2
