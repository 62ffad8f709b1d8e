"""`calehr map FILE.json [FILE.json ...] [--target NAME]`: show what would be sent; send nothing.

Several files are one booking's story, in the order given: each maps as the worker would map it
after the ones before (one appointment key, S14 for a confirmation, a no-show's times and patient
taken from the booking's last event, duplicates and stale events not sent). A booking the files
do not introduce is looked up in the running bridge's ledger when its Redis answers.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from core import clock
from core.config import Settings, TargetSettings
from core.ehr_echo import Filler
from core.errors import MappingError, PayloadError
from core.models import AppointmentEvent, EventKind

if TYPE_CHECKING:
    from core.runtime import Runtime


@dataclass
class _Story:
    """What the worker's ledger would know after the files mapped so far."""

    keys: dict[str, str] = field(default_factory=dict)  # booking uid -> appointment key
    uid_status: dict[str, str] = field(default_factory=dict)  # booking uid -> last kind
    last_event: dict[str, AppointmentEvent] = field(default_factory=dict)  # key -> event
    appts: dict[str, dict[str, str]] = field(default_factory=dict)  # key -> last applied
    marks: dict[str, str] = field(default_factory=dict)  # "key|mark" -> file that set it
    bridge: Runtime | None = None  # the running bridge's stores, when its Redis answers

    def record(self, event: AppointmentEvent, sequence: int, mark: str, name: str) -> None:
        key = event.appointment_key
        self.keys[event.uid] = key
        if event.previous_uid:
            self.keys[event.previous_uid] = key
        self.uid_status[event.uid] = event.kind.value
        self.appts[key] = {"last_sequence": str(sequence), "status": event.kind.value,
                           "last_created": repr(event.created_at.timestamp())}
        self.marks[f"{key}|{mark}"] = name
        if event.kind is not EventKind.NO_SHOW:
            self.last_event[key] = event

    def learn(self, event: AppointmentEvent) -> bool:
        """What the running bridge's ledger knows of this booking's identity: its key, its uids'
        states and its last booking event (False: nothing). Its dedupe marks are left out, so
        a body the bridge already applied still shows its message."""
        from core.crypto import DecryptError
        from worker.events import load_event

        rt = self.bridge
        if rt is None:
            return False
        candidates = (event.uid, event.previous_uid, event.appointment_key)
        key = next((k for c in candidates if c and (k := rt.ledger.resolve(c))), None)
        if key is None:
            return False
        appt = rt.ledger.snapshot_view(key)
        for known in appt["uids"]:
            self.keys[known] = key
        self.uid_status.update(appt["uid_statuses"])
        booking_event = appt["appointment"].get("booking_event_id") or \
            appt["appointment"].get("last_event_id")
        if booking_event:
            try:
                base, _ = load_event(rt, booking_event)
            except (KeyError, PayloadError, DecryptError):  # purged by retention, or unreadable
                return True
            if base.kind is not EventKind.NO_SHOW:
                self.last_event[key] = base
        return True


def run_map(settings: Settings, paths: Path | list[Path], target_name: str | None) -> int:
    from adapters.calcom.payload import parse_body

    paths = [paths] if isinstance(paths, Path) else paths
    bodies = []
    for path in paths:
        try:
            bodies.append((path, parse_body(path.read_bytes())))
        except OSError as exc:
            print(f"cannot read {path}: {exc.strerror}", file=sys.stderr)
            return 2
        except PayloadError as exc:
            print(f"{path}: invalid webhook body: {exc}", file=sys.stderr)
            return 2
    story = _Story(bridge=_bridge(settings))
    for index, (path, body) in enumerate(bodies):
        if len(bodies) > 1:
            print(f"## {path.name}")
        code = _map_one(settings, story, index, path.name, body, target_name)
        if code:
            return code
    return 0


def _bridge(settings: Settings) -> Runtime | None:
    """The running bridge's stores, so a body maps against what the bridge already knows; None
    when no Redis is configured or it does not answer (then only the files given count)."""
    if not settings.redis_url:
        return None
    import redis

    from core.runtime import Runtime

    try:
        rt = Runtime.build(settings, kick=lambda *a: None, reprocess=lambda *a: None)
        rt.redis.ping()
    except (redis.RedisError, ValueError):
        return None
    return rt


def _filler(story: _Story, event: AppointmentEvent, target: TargetSettings) -> Filler | None:
    """The EHR's filler id the running bridge learned for this appointment (SCH-2, as the
    worker sends it), or None."""
    if story.bridge is None or target.kind == "fhir":
        return None
    import redis

    from core.ehr_echo import EhrEchoLedger

    rt = story.bridge
    try:
        return EhrEchoLedger(rt.redis, rt.settings.key_prefix).filler(event.appointment_key,
                                                                      target.name)
    except redis.RedisError:  # gone since it answered: map without it
        return None


def _map_one(settings: Settings, story: _Story, index: int, name: str, body,
             target_name: str | None) -> int:
    from adapters.calcom.payload import normalise
    from core.deliveries import Delivery, control_id_for
    from worker.accept_plan import sequence_and_mark, skip_reason
    from worker.routing import route
    from worker.rules import message_event_for, opted_in
    from worker.transports import build_wire

    if not body.handled:
        print(f"{body.trigger}: not mapped (the bridge records it as ignored)")
        return 0
    event = normalise(f"map-preview-{index}", body, story.keys.get)
    if event.uid not in story.keys and story.learn(event):
        event = normalise(f"map-preview-{index}", body, story.keys.get)
    appt = story.appts.get(event.appointment_key, {})
    sequence, mark = sequence_and_mark(event, appt)
    earlier = story.marks.get(f"{event.appointment_key}|{mark}")
    if earlier:
        print(f"{body.trigger}: not sent (the same news as {earlier})")
        return 0
    reason = skip_reason(event, sequence, appt, story.uid_status)
    if reason:
        print(f"{body.trigger}: not sent ({reason})")
        return 0
    message_event = message_event_for(event, story.uid_status.get(event.uid))
    if event.kind is EventKind.NO_SHOW:
        base = story.last_event.get(event.appointment_key)
        if base is None:
            print(f"{body.trigger} names booking {event.uid} but carries no times or patient: "
                  "name the booking's body first (calehr map BOOKING.json NO_SHOW.json)",
                  file=sys.stderr)
            return 2
        event = base.with_no_show(event)
    story.record(event, sequence, mark, name)
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
        delivery_id = f"preview.{name}" if index == 0 else f"preview{index}.{name}"
        d = Delivery(id=delivery_id, event_id=event.event_id,
                     appointment_key=event.appointment_key, target=name,
                     message_event=message_event, order=index, state="preview",
                     control_id=control_id_for(delivery_id), created_at=clock.now())
        try:
            wire = build_wire(settings, target, event, d, _filler(story, event, target))
        except MappingError as exc:
            print(f"# target {name}: mapping error: {exc}", file=sys.stderr)
            return 3
        print(f"# target {name} ({target.kind})")
        text = wire.decode("latin-1" if target.charset.startswith("8859") else "utf-8")
        print(text.replace("\r", "\n").rstrip("\n"))
    return 0
