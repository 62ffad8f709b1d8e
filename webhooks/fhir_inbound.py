"""POST/PUT /fhir/Appointment and /fhir/Slot: the EHR books first over FHIR R4.

Bearer token from `inbound.fhir_token` (empty: every request is refused). The body is
stored encrypted, then applied as a block change exactly like an inbound SIU. Errors answer
with an OperationOutcome whose text names the element, never a value from the body.

Appointment.status booked, pending, arrived, checked-in → block; cancelled, entered-in-error
→ release; noshow and others → nothing. Slot.status busy, busy-unavailable, busy-tentative →
block; free, entered-in-error → release. The provider: a participant actor (Appointment) or the
schedule (Slot) whose identifier value, or reference id, is a configured `ehr_id`, or whose
reference (`Practitioner/<id>`) names a provider's configured `fhir_id`.

An Appointment whose identifier system is a FHIR target's `identifier_system` is one the bridge
sent: never a block; a move, cancel or no-show of it goes to Cal.com (worker/ehr_changes.py).
The answer is the stored resource (id, meta.versionId, meta.lastUpdated), or what `Prefer:
return=minimal | OperationOutcome` asks for, with Location, ETag and Last-Modified.
"""

from __future__ import annotations

import hmac
import json
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import redis
from flask import Blueprint, Response, current_app, jsonify, request

from core import clock
from core.blocks import BLOCK, NONE, RELEASE, BlockChange
from core.inbound_store import InboundStore
from core.interfaces import BusyBlocks, EhrChanges, EhrReport
from core.replication import confirm
from webhooks.context import bridge

log = logging.getLogger(__name__)
bp = Blueprint("fhir_inbound", __name__, url_prefix="/fhir")
MAX_BODY = 256 * 1024
APPOINTMENT_ACTIONS = {"booked": BLOCK, "pending": BLOCK, "arrived": BLOCK, "checked-in": BLOCK,
                       "cancelled": RELEASE, "entered-in-error": RELEASE}
SLOT_ACTIONS = {"busy": BLOCK, "busy-unavailable": BLOCK, "busy-tentative": BLOCK,
                "free": RELEASE, "entered-in-error": RELEASE}


class FhirInboundError(ValueError):
    def __init__(self, status: int, code: str, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.code = code
        self.text = text


def outcome(status: int, severity: str, code: str, text: str) -> tuple[Response, int]:
    return jsonify(resourceType="OperationOutcome",
                   issue=[{"severity": severity, "code": code, "diagnostics": text}]), status


# mapping (pure) ---------------------------------------------------------------------------
def _instant(value: Any, name: str) -> datetime:
    if not isinstance(value, str):
        raise FhirInboundError(422, "required", f"{name} is required for a block")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise FhirInboundError(422, "value", f"{name} is not a FHIR instant") from None
    if parsed.tzinfo is None:
        raise FhirInboundError(422, "value", f"{name} has no time zone offset (instant)")
    if not 1900 <= parsed.year <= 2999:  # also keeps UTC arithmetic from overflowing
        raise FhirInboundError(422, "value", f"{name} is outside the years 1900-2999")
    return parsed.astimezone(UTC)


def _array(resource: dict[str, Any], name: str, where: str) -> list[Any]:
    value = resource.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        raise FhirInboundError(422, "structure", f"{where}.{name} must be an array")
    return value


def _ref_ids(ref: Any) -> list[str]:
    """Identifier value and reference id of a FHIR Reference."""
    if not isinstance(ref, dict):
        return []
    ids = []
    ident = ref.get("identifier")
    if isinstance(ident, dict) and isinstance(ident.get("value"), str):
        ids.append(ident["value"])
    if isinstance(ref.get("reference"), str):
        ids.append(ref["reference"].rstrip("/").rsplit("/", 1)[-1])
    return ids


def _external_key(resource: dict[str, Any], url_id: str | None) -> tuple[str, str]:
    for ident in _array(resource, "identifier", resource["resourceType"]):
        if isinstance(ident, dict) and isinstance(ident.get("value"), str) and ident["value"]:
            return (str(ident.get("system") or "fhir"), ident["value"])
    rid = url_id or resource.get("id")
    if isinstance(rid, str) and rid:
        return ("fhir", f"{resource['resourceType']}/{rid}")
    raise FhirInboundError(422, "required", f"{resource['resourceType']} needs an identifier "
                                            "or an id to be released later")


def _actors(resource: dict[str, Any]) -> list[Any]:
    if resource["resourceType"] == "Appointment":
        return [p.get("actor") for p in _array(resource, "participant", "Appointment")
                if isinstance(p, dict) and p.get("status") != "declined"]
    actors = [resource.get("schedule")]
    for contained in _array(resource, "contained", "Slot"):
        if isinstance(contained, dict) and contained.get("resourceType") == "Schedule":
            actors += _array(contained, "actor", "Slot.contained")
    return actors


def to_change(resource: dict[str, Any], known: Mapping[str, str],
              url_id: str | None) -> BlockChange:
    """`known`: the ids a provider may be named by (its `ehr_id`, its `fhir_id`) -> `ehr_id`."""
    kind = resource["resourceType"]
    status = resource.get("status")
    actions = APPOINTMENT_ACTIONS if kind == "Appointment" else SLOT_ACTIONS
    action = actions.get(status, NONE) if isinstance(status, str) else None
    if action is None:
        raise FhirInboundError(422, "required", f"{kind}.status is required")
    key = _external_key(resource, url_id)
    origin = f"fhir:{kind}"
    if action != BLOCK:
        return BlockChange(action, key, origin=origin)
    providers = tuple(dict.fromkeys(known[i] for a in _actors(resource) for i in _ref_ids(a)
                                    if i in known))
    if not providers:
        where = "participant.actor" if kind == "Appointment" else "schedule"
        raise FhirInboundError(422, "not-found", f"no {where} identifies a configured provider")
    start = _instant(resource.get("start"), f"{kind}.start")
    end = _instant(resource.get("end"), f"{kind}.end")
    if end <= start:
        raise FhirInboundError(422, "value", f"{kind}.end is not after {kind}.start")
    return BlockChange(BLOCK, key, providers, start, end, origin)


# endpoint ---------------------------------------------------------------------------------
def _authorised() -> bool:
    expected = bridge().settings.inbound.fhir_token
    given = request.headers.get("Authorization", "")
    scheme, _, token = given.partition(" ")
    return bool(expected) and scheme.lower() == "bearer" and hmac.compare_digest(
        token.strip().encode(), expected.encode())


def _read(kind: str) -> tuple[bytes, dict[str, Any]]:
    """The raw body (read at most MAX_BODY + 1 bytes) and the resource it holds."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise FhirInboundError(413, "too-costly", f"body is larger than {MAX_BODY} bytes")
    raw = request.stream.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise FhirInboundError(413, "too-costly", f"body is larger than {MAX_BODY} bytes")
    try:
        resource = json.loads(raw)
    except (ValueError, RecursionError):  # also nested too deep, or a number too long
        raise FhirInboundError(400, "structure", "body is not valid JSON") from None
    if not isinstance(resource, dict) or resource.get("resourceType") != kind:
        raise FhirInboundError(400, "structure", f"body is not a FHIR {kind} resource")
    return raw, resource


@dataclass(frozen=True)
class _Inbound:
    store: InboundStore
    service: BusyBlocks
    own: EhrChanges
    known: dict[str, str]  # ids a provider is named by (ehr_id, fhir_id) -> ehr_id


def _inbound() -> _Inbound:
    """Built once per app, like the MLLP listener's handler, with the bridge's cipher."""
    inbound = current_app.extensions.get("calehr-fhir-inbound")
    if inbound is None:
        ctx = bridge()
        cipher = ctx.store.cipher
        known = {p.ehr_id: p.ehr_id for p in ctx.settings.providers}
        known.update({p.fhir_id: p.ehr_id for p in ctx.settings.providers if p.fhir_id})
        if ctx.ehr_services is None:
            raise RuntimeError("FHIR inbound needs the EHR services (calehr.web.create_app wires them)")
        service, own = ctx.ehr_services(ctx.settings, ctx.redis, cipher)
        inbound = _Inbound(InboundStore.for_settings(ctx.settings, ctx.redis, cipher), service, own,
                           known)
        current_app.extensions["calehr-fhir-inbound"] = inbound
    return inbound


def _handle(kind: str, url_id: str | None) -> tuple[Response, int]:
    if not _authorised():
        return outcome(401, "error", "login", "a valid bearer token is required")
    inbound = _inbound()
    service = inbound.service
    applied = None
    try:
        raw, resource = _read(kind)
        if url_id is not None and resource.get("id") not in (None, url_id):
            raise FhirInboundError(400, "invalid", f"{kind}.id does not match the id in the URL")
        rid = url_id or _clean_id(resource.get("id")) or uuid.uuid4().hex
        message_id = inbound.store.put(raw, source="fhir", kind=kind)
        try:
            own = _own_appointment(inbound, resource) if kind == "Appointment" else None
            if own is None:
                change = to_change(resource, inbound.known, url_id)
        except FhirInboundError as exc:
            inbound.store.finish(message_id, f"rejected:{exc.code}")
            raise
        if own is None:
            applied = service.apply(change)
        inbound.store.finish(message_id, own or applied.outcome)
        version = _next_version(inbound.store, kind, rid)
        confirm(bridge().redis, bridge().settings.redis, bridge().settings.key_prefix)  # else 503
    except FhirInboundError as exc:
        log.warning("FHIR %s rejected: %s", kind, exc.text, extra={"outcome": str(exc.status)})
        return outcome(exc.status, "error", exc.code, exc.text)
    except redis.RedisError as exc:
        log.error("FHIR inbound: store unavailable: %s", exc.__class__.__name__)
        return outcome(503, "error", "transient", "the block store cannot be reached; retry later")
    if own is not None:
        if own.endswith("_queued"):  # short timeouts; what fails stays queued for the beat
            inbound.own.run_pending()
        said = f"{own}: about a Cal.com booking of ours, no block"
    else:
        if applied.api_pending:  # short timeouts; what fails stays queued for `calehr mllp`
            service.sync_now([f"{provider}|{change.uid}" for provider in applied.providers])
        said = f"{applied.outcome}: {len(applied.providers)} provider(s)"
    log.info("FHIR %s applied: %s", kind, own or applied.outcome,
             extra={"outcome": own or applied.outcome})
    return _answer(kind, rid, int(version), resource, said)


def _answer(kind: str, rid: str, version: int, resource: dict[str, Any],
            said: str) -> tuple[Response, int]:
    """What a FHIR server answers a create or update with: the stored resource (or what
    `Prefer: return=` asks for), Location, ETag and Last-Modified."""
    created = request.method == "POST" or version == 1
    status = 201 if created else 200
    now = clock.now_utc().replace(microsecond=0)
    stored = {**resource, "id": rid,
              "meta": {**(resource.get("meta") if isinstance(resource.get("meta"), dict)
                          else {}),
                       "versionId": str(version),
                       "lastUpdated": now.isoformat().replace("+00:00", "Z")}}
    prefer = request.headers.get("Prefer", "").replace(" ", "").lower()
    if "return=minimal" in prefer:
        resp = Response(status=status)
    elif "return=operationoutcome" in prefer:
        resp = outcome(status, "information", "informational", said)[0]
    else:
        resp = Response(json.dumps(stored), status=status, mimetype="application/fhir+json")
    resp.headers["Location"] = f"{request.url_root}fhir/{kind}/{rid}/_history/{version}"
    resp.headers["ETag"] = f'W/"{version}"'
    resp.headers["Last-Modified"] = format_datetime(now, usegmt=True)
    return resp, status


def _clean_id(value: Any) -> str:
    """A client's id kept when it is a valid FHIR id ([A-Za-z0-9-.]{1,64})."""
    if isinstance(value, str) and 0 < len(value) <= 64 and \
            all(c.isascii() and (c.isalnum() or c in "-.") for c in value):
        return value
    return ""


def _next_version(store: InboundStore, kind: str, rid: str) -> int:
    """The resource's next versionId. Kept as long as inbound messages (retention), one key per
    resource, so resources nobody updates any more go instead of growing one hash for ever."""
    key = f"{store.p}:fhir-inbound:version:{kind}/{rid}"
    pipe = store.r.pipeline(transaction=True)
    pipe.incr(key)
    pipe.expire(key, store.keep)
    return int(pipe.execute()[0])


# FHIR Appointment status -> what the EHR did, in SIU terms (for our own appointments)
OWN_EVENTS = {"booked": "S13", "pending": "S13", "arrived": "S14", "checked-in": "S14",
              "fulfilled": "S14", "cancelled": "S15", "entered-in-error": "S15", "noshow": "S26"}


def _own_appointment(inbound: _Inbound, resource: dict[str, Any]) -> str | None:
    """The outcome when the Appointment is one the bridge sent (its identifier system is a
    FHIR target's `identifier_system`), else None."""
    settings = bridge().settings
    for ident in _array(resource, "identifier", "Appointment"):
        if not isinstance(ident, dict) or not isinstance(ident.get("value"), str):
            continue
        target = next((t for t in settings.targets if t.kind == "fhir"
                       and t.identifier_system == ident.get("system")), None)
        if target is None or not ident["value"]:
            continue
        status = resource.get("status")
        event = OWN_EVENTS.get(status, "S14") if isinstance(status, str) else "S14"
        start = end = None
        if event == "S13":
            start = _instant(resource.get("start"), "Appointment.start")
            end = _instant(resource.get("end"), "Appointment.end")
        reason = resource.get("cancelationReason")
        text = reason.get("text") if isinstance(reason, dict) else None
        return inbound.own.handle(ident["value"], target, EhrReport(
            event=event, start=start, end=end, status=status if isinstance(status, str) else "",
            reason=text if isinstance(text, str) else "", origin="fhir:Appointment"))
    return None


@bp.post("/Appointment")
@bp.put("/Appointment")
@bp.put("/Appointment/<rid>")
def appointment(rid: str | None = None) -> tuple[Response, int]:
    return _handle("Appointment", rid)


@bp.post("/Slot")
@bp.put("/Slot")
@bp.put("/Slot/<rid>")
def slot(rid: str | None = None) -> tuple[Response, int]:
    return _handle("Slot", rid)
