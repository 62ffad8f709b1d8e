"""POST/PUT /fhir/Appointment and /fhir/Slot: the EHR books first over FHIR R4.

Bearer token from `inbound.fhir_token` (empty: every request is refused). The body is
stored encrypted, then applied as a block change exactly like an inbound SIU. Errors answer
with an OperationOutcome whose text names the element, never a value from the body.

Appointment.status booked, pending, arrived, checked-in → block; cancelled, entered-in-error
→ release; noshow and others → nothing. Slot.status busy, busy-unavailable, busy-tentative →
block; free, entered-in-error → release. The provider: a participant actor (Appointment) or the
schedule (Slot) whose identifier value, or reference id, is a configured `ehr_id`.
"""

from __future__ import annotations

import hmac
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
from flask import Blueprint, Response, current_app, jsonify, request

from core.blocks import BLOCK, NONE, RELEASE, BlockChange
from core.inbound_store import InboundStore
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


def to_change(resource: dict[str, Any], known: frozenset[str], url_id: str | None) -> BlockChange:
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
    providers = tuple(dict.fromkeys(i for a in _actors(resource) for i in _ref_ids(a) if i in known))
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
    service: Any  # worker.blocking.BlockingService, imported on first use
    known: frozenset[str]  # EHR ids of the configured providers


def _inbound() -> _Inbound:
    """Built once per app, like the MLLP listener's handler, with the bridge's cipher."""
    inbound = current_app.extensions.get("calehr-fhir-inbound")
    if inbound is None:
        from worker.blocking import BlockingService

        ctx = bridge()
        cipher = ctx.store.cipher
        inbound = _Inbound(InboundStore.for_settings(ctx.settings, ctx.redis, cipher),
                           BlockingService(ctx.settings, ctx.redis, cipher),
                           frozenset(p.ehr_id for p in ctx.settings.providers))
        current_app.extensions["calehr-fhir-inbound"] = inbound
    return inbound


def _handle(kind: str, url_id: str | None) -> tuple[Response, int]:
    if not _authorised():
        return outcome(401, "error", "login", "a valid bearer token is required")
    inbound = _inbound()
    service = inbound.service
    try:
        raw, resource = _read(kind)
        message_id = inbound.store.put(raw, source="fhir", kind=kind)
        try:
            change = to_change(resource, inbound.known, url_id)
        except FhirInboundError as exc:
            inbound.store.finish(message_id, f"rejected:{exc.code}")
            raise
        applied = service.apply(change)
        inbound.store.finish(message_id, applied.outcome)
    except FhirInboundError as exc:
        log.warning("FHIR %s rejected: %s", kind, exc.text, extra={"outcome": str(exc.status)})
        return outcome(exc.status, "error", exc.code, exc.text)
    except redis.RedisError as exc:
        log.error("FHIR inbound: store unavailable: %s", exc.__class__.__name__)
        return outcome(503, "error", "transient", "the block store cannot be reached; retry later")
    if applied.api_pending:  # short timeouts; what fails stays queued for `calehr mllp`
        service.sync.run([f"{provider}|{change.uid}" for provider in applied.providers])
    log.info("FHIR %s applied: %s", kind, applied.outcome, extra={"outcome": applied.outcome})
    status = 201 if request.method == "POST" else 200
    return outcome(status, "information", "informational",
                   f"{applied.outcome}: {len(applied.providers)} provider(s)")


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
