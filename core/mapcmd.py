"""`calehr map FILE.json [--target NAME]`: show what would be sent; send nothing."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from core.config import Settings
from core.errors import MappingError, PayloadError


def run_map(settings: Settings, path: Path, target_name: str | None) -> int:
    from adapters.calcom.payload import normalise, parse_body
    from worker.ledger import Delivery, control_id_for
    from worker.routing import route
    from worker.rules import message_event_for, opted_in
    from worker.transports import build_wire

    try:
        body = parse_body(path.read_bytes())
    except OSError as exc:
        print(f"cannot read {path}: {exc.strerror}", file=sys.stderr)
        return 2
    except PayloadError as exc:
        print(f"invalid webhook body: {exc}", file=sys.stderr)
        return 2
    if not body.handled:
        print(f"{body.trigger}: not mapped (the bridge records it as ignored)")
        return 0
    event = normalise("map-preview", body)
    message_event = message_event_for(event, None)
    if message_event is None:
        print(f"{event.kind.value}: not sent by default")
        return 0
    routed = [target_name] if target_name else route(event, settings)
    if not routed:
        print("no route matches this event (it would be recorded as unrouted)")
        return 0
    try:
        targets = opted_in(event, routed, settings)
    except KeyError as exc:
        print(f"unknown target {exc.args[0]!r}", file=sys.stderr)
        return 2
    if not targets:
        print(f"{event.kind.value}: no target takes it (set send_meeting_ended on a target)")
        return 0
    for name in targets:
        try:
            target = settings.target(name)
        except KeyError:
            print(f"unknown target {name!r}", file=sys.stderr)
            return 2
        delivery_id = f"preview.{name}"
        d = Delivery(id=delivery_id, event_id="map-preview", appointment_key=event.appointment_key,
                     target=name, message_event=message_event, order=0,
                     control_id=control_id_for(delivery_id), state="preview",
                     created_at=time.time())
        try:
            wire = build_wire(settings, target, event, d)
        except MappingError as exc:
            print(f"# target {name}: mapping error: {exc}", file=sys.stderr)
            return 3
        print(f"# target {name} ({target.kind})")
        text = wire.decode("latin-1" if target.charset.startswith("8859") else "utf-8")
        print(text.replace("\r", "\n").rstrip("\n"))
    return 0
