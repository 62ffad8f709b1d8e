"""What one target wants in its SIU messages: names, time zone, charset, code mappings."""

from __future__ import annotations

from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from core.config import (
    EventTypeSettings,
    LocationSettings,
    PatientFieldSettings,
    ProviderSettings,
    Settings,
)


@dataclass(frozen=True)
class SiuProfile:
    sending_application: str = "CALEHR"
    sending_facility: str = "CALCOM"
    receiving_application: str = "EHR"
    receiving_facility: str = "HOSPITAL"
    processing_id: str = "P"
    charset: str = "UNICODE UTF-8"
    timezone: str = "UTC"
    allow_notes: bool = False
    status_case: str = "title"
    placer_namespace: str = "CALCOM"
    accept_ack_type: str = ""  # MSH-15; both empty = original acknowledgment mode
    application_ack_type: str = ""  # MSH-16
    providers: tuple[ProviderSettings, ...] = ()
    event_types: tuple[EventTypeSettings, ...] = ()
    locations: tuple[LocationSettings, ...] = ()
    patient: PatientFieldSettings = field(default_factory=PatientFieldSettings)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @classmethod
    def from_settings(cls, settings: Settings, target_name: str) -> SiuProfile:
        t = settings.target(target_name)
        enhanced = t.ack_mode == "enhanced"
        return cls(
            sending_application=t.sending_application, sending_facility=t.sending_facility,
            receiving_application=t.receiving_application,
            receiving_facility=t.receiving_facility, processing_id=t.processing_id,
            charset=t.charset, timezone=t.timezone, allow_notes=t.allow_notes,
            status_case=t.status_case, providers=settings.providers,
            event_types=settings.event_types, locations=settings.locations,
            patient=settings.patient,
            accept_ack_type=t.accept_ack_type if enhanced else "",
            application_ack_type=t.application_ack_type if enhanced else "",
        )
