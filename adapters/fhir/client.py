"""FHIR R4 REST transport: resolve the Patient, then upsert the Appointment by identifier.

Every HTTP outcome comes back as a DeliveryResult; only mapping errors raise. Details and logs
carry status codes, issue codes and ids, never patient data.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import requests

from adapters.fhir.mapping import (
    FhirProfile,
    build_appointment,
    build_patient,
    patient_identifier,
    search_token,
)
from core import clock
from core.config import TargetSettings
from core.models import AppointmentEvent, DeliveryResult
from core.redact import MASK, redact_text

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
EXCERPT_CHARS = 4000
TOKEN_MARGIN_SECONDS = 30.0
TRANSIENT_STATUS = frozenset({408, 429})


class _Failed(Exception):  # noqa: N818 - internal control flow, never leaves this module
    def __init__(self, result: DeliveryResult) -> None:
        super().__init__(result.detail)
        self.result = result


class FhirClient:
    def __init__(self, target: TargetSettings) -> None:
        self.target = target
        self.base = target.url.rstrip("/")
        self.timeout = (target.connect_timeout, target.read_timeout)
        self.session = requests.Session()
        self.session.headers.update({"Accept": FHIR_JSON})
        # Passed on every call: a session-level verify loses to REQUESTS_CA_BUNDLE (requests #3829).
        self.verify: str | bool = target.tls_ca_file or True
        self.cert: tuple[str, str] | str | None = None
        if target.tls_cert_file:
            self.cert = ((target.tls_cert_file, target.tls_key_file)
                         if target.tls_key_file else target.tls_cert_file)
        self._token = ""
        self._token_expires = 0.0
        self._token_lock = threading.Lock()

    def close(self) -> None:
        self.session.close()

    def send_appointment(self, event: AppointmentEvent, profile: FhirProfile) -> DeliveryResult:
        build_appointment(event, profile)  # mapping errors surface before any request
        phi = _phi_values(event)
        try:
            patient_ref = self._resolve_patient(event, profile, phi)
            appointment = build_appointment(event, profile, patient_ref=patient_ref)
            token = search_token(profile.identifier_system, event.appointment_key)
            resp = self._call("PUT", "Appointment", "appointment", phi,
                              params={"identifier": token}, json=appointment)
        except _Failed as failed:
            return failed.result
        remote_id = _resource_id(resp, "Appointment")
        log.info("fhir appointment stored", extra={"target": self.target.name,
                                                   "event_id": event.event_id})
        return DeliveryResult(ok=True, status_code=resp.status_code, remote_id=remote_id,
                              detail=f"http_{resp.status_code}",
                              response_excerpt=resp.text[:EXCERPT_CHARS])

    def _resolve_patient(self, event: AppointmentEvent, profile: FhirProfile,
                         phi: list[str]) -> str:
        token = search_token(*patient_identifier(event, profile))
        # POST _search (R4 http.html#search): the member id stays out of URLs and access logs
        resp = self._call("POST", "Patient/_search", "patient_search", phi,
                          data={"identifier": token})
        body = _json(resp)
        entries = [e.get("resource") for e in (body or {}).get("entry") or []
                   if isinstance(e, dict) and (e.get("search") or {}).get("mode", "match") == "match"]
        ids = [r["id"] for r in entries if isinstance(r, dict)
               and r.get("resourceType") == "Patient" and r.get("id")]
        if len(ids) == 1:
            return f"Patient/{ids[0]}"
        # none or several: let the server decide atomically (several -> 412, dead letter)
        resp = self._call("POST", "Patient", "patient_create", phi, json=build_patient(event, profile),
                          headers={"If-None-Exist": "identifier=" + quote(token, safe=":/|")})
        patient_id = _resource_id(resp, "Patient")
        if not patient_id:
            raise _Failed(DeliveryResult(ok=False, status_code=resp.status_code,
                                         detail="patient_create: no Patient id in the response",
                                         response_excerpt=resp.text[:EXCERPT_CHARS]))
        return f"Patient/{patient_id}"

    def _call(self, method: str, path: str, step: str, phi: list[str],
              **kwargs: Any) -> requests.Response:
        """One FHIR request with auth (one token refresh on 401); raises _Failed unless 2xx."""
        url = f"{self.base}/{path}"
        headers = {"Content-Type": FHIR_JSON} if "json" in kwargs else {}
        headers.update(kwargs.pop("headers", {}))
        for attempt in (1, 2):
            headers.update(self._auth_header(step))
            try:
                resp = self.session.request(method, url, headers=headers, timeout=self.timeout,
                                            verify=self.verify, cert=self.cert, **kwargs)
            except requests.RequestException as exc:
                raise _Failed(_network_failure(step, exc)) from None
            if resp.status_code == 401 and self.target.auth == "oauth2" and attempt == 1:
                self._drop_token()  # revoked or expired early: fetch a fresh one once
                continue
            break
        if 200 <= resp.status_code < 300:
            return resp
        raise _Failed(_http_failure(step, resp, phi))

    def _auth_header(self, step: str) -> dict[str, str]:
        if self.target.auth == "bearer":
            return {"Authorization": f"Bearer {self.target.token}"}
        if self.target.auth == "oauth2":
            return {"Authorization": f"Bearer {self._oauth_token(step)}"}
        return {}

    def _drop_token(self) -> None:
        with self._token_lock:
            self._token, self._token_expires = "", 0.0

    def _oauth_token(self, step: str) -> str:
        with self._token_lock:
            if self._token and time.monotonic() < self._token_expires:
                return self._token
            data = {"grant_type": "client_credentials", "client_id": self.target.client_id,
                    "client_secret": self.target.client_secret}
            try:
                # never follow a redirect: a 307 would re-post client_secret to another host
                resp = self.session.post(self.target.token_url, data=data, timeout=self.timeout,
                                         verify=self.verify, cert=self.cert,
                                         headers={"Accept": "application/json"},
                                         allow_redirects=False)
            except requests.RequestException as exc:
                raise _Failed(_network_failure(f"{step}: token", exc)) from None
            body = _json(resp) if resp.ok else None
            token = (body or {}).get("access_token")
            if not isinstance(token, str) or not token:
                # the token endpoint's body never goes into the detail: it may echo secrets
                raise _Failed(DeliveryResult(
                    ok=False, transient=_is_transient(resp.status_code), status_code=resp.status_code,
                    retry_after=_retry_after(resp), detail=f"{step}: token http_{resp.status_code}"))
            lifetime = _number((body or {}).get("expires_in"), 300.0)
            self._token = token
            self._token_expires = time.monotonic() + max(lifetime - TOKEN_MARGIN_SECONDS,
                                                         lifetime / 2)
            return token


def _network_failure(step: str, exc: requests.RequestException) -> DeliveryResult:
    if isinstance(exc, requests.ConnectTimeout):
        kind = "connect_timeout"
    elif isinstance(exc, requests.Timeout):
        kind = "read_timeout"
    elif isinstance(exc, requests.exceptions.SSLError):
        kind = "tls_error"
    elif isinstance(exc, requests.ConnectionError | requests.exceptions.ChunkedEncodingError):
        kind = "connection_error"
    else:  # bad URL or similar: config, retrying will not help
        return DeliveryResult(ok=False, detail=f"{step}: {exc.__class__.__name__}")
    return DeliveryResult(ok=False, transient=True, detail=f"{step}: {kind}")


def _http_failure(step: str, resp: requests.Response, phi: list[str]) -> DeliveryResult:
    detail = f"{step}: http_{resp.status_code}"
    codes, diagnostics = _outcome(_json(resp))
    if codes:
        detail += f" issues={','.join(codes)}"
    if diagnostics:
        detail += f" diagnostics={_clean(diagnostics, phi)[:500]}"
    return DeliveryResult(ok=False, transient=_is_transient(resp.status_code),
                          status_code=resp.status_code, retry_after=_retry_after(resp),
                          detail=detail, response_excerpt=resp.text[:EXCERPT_CHARS])


def _is_transient(status: int) -> bool:
    return status >= 500 or status in TRANSIENT_STATUS


def _outcome(body: dict[str, Any] | None) -> tuple[list[str], str]:
    """Issue codes, and each issue's words: diagnostics, details.text, and where (expression,
    else the deprecated location). Servers differ in which of these they fill."""
    if not body or body.get("resourceType") != "OperationOutcome":
        return [], ""
    issues = [i for i in body.get("issue") or [] if isinstance(i, dict)]
    codes = [str(i["code"]) for i in issues if i.get("code")]
    return codes, "; ".join(t for t in (_issue_text(i) for i in issues) if t)


def _issue_text(issue: dict[str, Any]) -> str:
    details = issue.get("details")
    words = [str(issue["diagnostics"]).strip() if issue.get("diagnostics") else "",
             str(details["text"]).strip() if isinstance(details, dict) and details.get("text")
             else ""]
    words = list(dict.fromkeys(w for w in words if w))  # one server puts the same in both
    where = issue.get("expression") or issue.get("location")
    paths = [str(p) for p in where if isinstance(p, str | int)] if isinstance(where, list) else []
    text = " / ".join(words)
    return f"{text} (at {', '.join(paths)})" if paths and text else text or (
        f"at {', '.join(paths)}" if paths else "")


def _clean(text: str, phi: list[str]) -> str:
    # servers echo submitted values; mask the ones we know before the generic patterns
    for value in phi:
        text = text.replace(value, MASK)
    return redact_text(text)


def _phi_values(event: AppointmentEvent) -> list[str]:
    a = event.attendee
    values = [a.name, a.first_name, a.last_name, a.email, a.phone, event.notes,
              event.cancellation_reason]
    values += [v for v in event.responses.values() if isinstance(v, str)]
    # longest first so a full name is masked before its parts
    return sorted({v.strip() for v in values if v and len(v.strip()) >= 3}, key=len, reverse=True)


def _retry_after(resp: requests.Response) -> float | None:
    raw = resp.headers.get("Retry-After", "").strip()
    if not raw:
        return None
    try:
        return max(float(raw), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - clock.now_utc()).total_seconds(), 0.0)


def _resource_id(resp: requests.Response, resource_type: str) -> str | None:
    """Id from `Location: [base]/Type/id/_history/n`, else from the body."""
    location = resp.headers.get("Location") or resp.headers.get("Content-Location") or ""
    parts = location.split("/")
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == resource_type and parts[i + 1]:
            return parts[i + 1]
    body = _json(resp)
    if body and body.get("resourceType") == resource_type and body.get("id"):
        return str(body["id"])
    return None


def _json(resp: requests.Response) -> dict[str, Any] | None:
    try:
        body = resp.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _number(value: Any, default: float) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else default
