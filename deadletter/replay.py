"""Replay, edit-and-resend and discard. Replays re-enter the normal path: dedupe and order apply."""

from __future__ import annotations

import difflib
import hashlib
import json

from core import clock
from core.runtime import Runtime


class ReplayError(Exception):
    pass


def replay(rt: Runtime, dl_id: str, actor: str, *, force: bool = False) -> str:
    """Put the failed event or delivery back in its queue. Returns what was re-queued."""
    d = rt.deadletters.get(dl_id)
    if d is None:
        raise ReplayError(f"no dead letter {dl_id}")
    if d.state not in ("open",):
        raise ReplayError(f"dead letter {dl_id} is {d.state}; only open ones can be replayed")
    if d.stage == "conflict":
        raise ReplayError("a conflict is resolved by a person in the EHR or Cal.com, not replayed")
    if d.stage == "ehr_change":
        raise ReplayError("an EHR-side change is made in Cal.com by a person, then resolved; "
                          "not replayed")
    if d.delivery_id:
        delivery = rt.ledger.get_delivery(d.delivery_id)
        if delivery is None:
            raise ReplayError(f"delivery {d.delivery_id} no longer exists (retention)")
        if not rt.store.exists(delivery.event_id):
            raise ReplayError(f"event {delivery.event_id} was removed by retention")
        # one MULTI puts it back in its queue: dying after it loses nothing (the sweep drains
        # the queue and a delivery that goes through resolves this record)
        rt.ledger.requeue(delivery, force=force, event_hash=rt.store.keys.event(delivery.event_id))
        rt.deadletters.set_state(dl_id, "replayed", actor, "replay", force=force)
        rt.audit.record(actor, "deadletter.replay", dl_id, delivery_id=delivery.id, force=force)
        rt.kick(delivery.appointment_key, delivery.target, None)
        return delivery.id
    if not d.event_id or not rt.store.exists(d.event_id):
        raise ReplayError("the original event is no longer stored")
    # "received" puts it in the unprocessed set: the sweep re-sends it if we die before the task
    rt.store.set_state(d.event_id, "received", "replayed" + (":force" if force else ""))
    rt.deadletters.set_state(dl_id, "replayed", actor, "replay", force=force)
    rt.audit.record(actor, "deadletter.replay", dl_id, event_id=d.event_id, force=force)
    rt.reprocess(d.event_id, force)
    # an event-level replay ends with this record resolved once the event is accepted
    rt.deadletters.note(dl_id, "system", "event re-queued", event_id=d.event_id)
    return d.event_id


def resend_edited(rt: Runtime, dl_id: str, wire: bytes, actor: str) -> str:
    """Send a corrected wire message instead of the built one; the diff is kept encrypted."""
    d = rt.deadletters.get(dl_id)
    if d is None or not d.delivery_id:
        raise ReplayError("only a failed delivery can be edited and resent")
    if d.state != "open":
        raise ReplayError(f"dead letter {dl_id} is {d.state}")
    old = rt.deadletters.wire(dl_id) or b""
    wire = wire.replace(b"\r\n", b"\r").replace(b"\n", b"\r")
    if not wire.endswith(b"\r"):
        wire += b"\r"
    diff = "\n".join(difflib.unified_diff(
        old.decode("utf-8", "replace").split("\r"), wire.decode("utf-8", "replace").split("\r"),
        "before", "after", lineterm=""))
    rt.redis.rpush(rt.deadletters.edits_key(dl_id), rt.deadletters.cipher.encrypt(json.dumps(
        {"ts": clock.now(), "actor": actor, "diff": diff}).encode()))
    changed = sum(1 for line in diff.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---"))
    digest = hashlib.sha256(wire).hexdigest()[:16]
    rt.deadletters.note(dl_id, actor, "edit", changed_lines=changed, sha256=digest)
    rt.audit.record(actor, "deadletter.edit", dl_id, changed_lines=changed, sha256=digest)
    rt.ledger.set_override(d.delivery_id, wire)
    rt.deadletters.replace_wire(dl_id, wire)
    return replay(rt, dl_id, actor, force=True)


def edits(rt: Runtime, dl_id: str) -> list[dict]:
    """The encrypted edit history (diffs may hold PHI: operators only)."""
    return [json.loads(rt.deadletters.cipher.decrypt(t))
            for t in rt.redis.lrange(rt.deadletters.edits_key(dl_id), 0, -1)]


def discard(rt: Runtime, dl_id: str, actor: str, reason: str) -> None:
    if not reason.strip():
        raise ReplayError("a reason is required to discard a dead letter")
    d = rt.deadletters.get(dl_id)
    if d is None:
        raise ReplayError(f"no dead letter {dl_id}")
    if d.state in ("discarded", "resolved"):
        raise ReplayError(f"dead letter {dl_id} is already {d.state}")
    rt.deadletters.set_state(dl_id, "discarded", actor, "discard", reason=reason[:500])
    rt.audit.record(actor, "deadletter.discard", dl_id, reason=reason[:500])
