"""FHIR R4 adapter: Appointment mapping (pure) and the REST client."""

from adapters.fhir.client import FhirClient
from adapters.fhir.mapping import FhirProfile, build_appointment, build_patient

__all__ = ["FhirClient", "FhirProfile", "build_appointment", "build_patient"]
