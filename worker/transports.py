"""Pick the adapter for a target kind: build the wire message and send it."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from functools import lru_cache

from core.config import Settings, TargetSettings
from core.deliveries import Delivery
from core.ehr_echo import Filler
from core.models import AppointmentEvent, DeliveryResult


@lru_cache(maxsize=64)
def _siu_profile(settings: Settings, target_name: str):
    from adapters.hl7v2 import SiuProfile

    return SiuProfile.from_settings(settings, target_name)


@lru_cache(maxsize=64)
def _fhir_profile(settings: Settings, target_name: str):
    from adapters.fhir.mapping import FhirProfile

    return FhirProfile.from_settings(settings, target_name)


# keyed by the target's settings, not its name: a process that builds another Runtime (tests,
# `calehr map`) with a target of the same name on another port must not reach the first one
_transports: dict[TargetSettings, object] = {}
_transports_lock = threading.Lock()  # the threads pool: still one connection per target


def _transport(target: TargetSettings):
    with _transports_lock:
        return _transport_locked(target)


def _transport_locked(target: TargetSettings):
    if target not in _transports:
        if target.kind == "mllp":
            from adapters.hl7v2 import MLLPClient

            _transports[target] = MLLPClient(target)
        elif target.kind == "file":
            from adapters.hl7v2 import FileDropTransport

            _transports[target] = FileDropTransport(target)
        else:
            from adapters.fhir.client import FhirClient

            _transports[target] = FhirClient(target)
    return _transports[target]


def build_wire(settings: Settings, target: TargetSettings, event: AppointmentEvent,
               d: Delivery, filler: Filler | None = None) -> bytes:
    """The message the target would get (used by delivery and by `calehr map`)."""
    if target.kind == "fhir":
        from adapters.fhir.mapping import build_appointment

        resource = build_appointment(event, _fhir_profile(settings, target.name), patient_ref=None)
        return json.dumps(resource, indent=2).encode()
    from adapters.hl7v2 import build_siu
    from worker.rules import filler_status_for

    return build_siu(event, _siu_profile(settings, target.name), message_event=d.message_event,
                     control_id=d.control_id,
                     message_time=datetime.fromtimestamp(d.created_at or 0, UTC),
                     filler_status=filler_status_for(event),
                     filler_id=(filler.id, filler.namespace) if filler else None)


def send_event(settings: Settings, target: TargetSettings, event: AppointmentEvent,
               d: Delivery, override: bytes | None,
               filler: Filler | None = None) -> tuple[DeliveryResult, bytes | None]:
    transport = _transport(target)
    if target.kind == "fhir":
        result = transport.send_appointment(event, _fhir_profile(settings, target.name))
        return result, build_wire(settings, target, event, d)
    wire = override if override is not None else build_wire(settings, target, event, d, filler)
    return transport.send(wire, d.control_id), wire
