"""A small in-memory FHIR R4 server for tests: real HTTP on 127.0.0.1, scriptable faults.

Honours what the bridge relies on (R4 http.html): conditional update `PUT Type?identifier=`,
`If-None-Exist` on create, search by identifier, read by id, versionId/lastUpdated, Location.
FHIR endpoints live under `/fhir`; `POST /token` is an OAuth2 client-credentials endpoint.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import ssl
import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fhir.resources.R4B.appointment import Appointment
from fhir.resources.R4B.patient import Patient
from pydantic import ValidationError

MODELS = {"Appointment": Appointment, "Patient": Patient}
APPOINTMENT_STATUS = {"proposed", "pending", "booked", "arrived", "fulfilled", "cancelled", "noshow",
                      "entered-in-error", "checked-in", "waitlist"}
PARTICIPANT_STATUS = {"accepted", "declined", "tentative", "needs-action"}


def appointment_problems(body: dict[str, Any]) -> list[str]:
    """R4 required bindings and invariants app-1..4 that fhir.resources does not check."""
    problems = []
    if body.get("status") not in APPOINTMENT_STATUS:
        problems.append("status: not in the R4 appointmentstatus value set")
    participants = body.get("participant") or []
    if not participants:
        problems.append("participant: at least one is required")
    for i, p in enumerate(participants):
        if not (p.get("type") or p.get("actor")):
            problems.append(f"app-1: participant[{i}] needs type or actor")
        if p.get("status") not in PARTICIPANT_STATUS:
            problems.append(f"participant[{i}].status: not in the R4 value set")
    if ("start" in body) != ("end" in body):
        problems.append("app-2: start and end must both be present or both absent")
    if "start" not in body and body.get("status") not in ("proposed", "cancelled", "waitlist"):
        problems.append("app-3: start and end are required for this status")
    if "cancelationReason" in body and body.get("status") not in ("cancelled", "noshow"):
        problems.append("app-4: cancelationReason only for cancelled or noshow")
    return problems


def outcome(code: str, diagnostics: str = "", severity: str = "error") -> dict[str, Any]:
    issue: dict[str, Any] = {"severity": severity, "code": code}
    if diagnostics:
        issue["diagnostics"] = diagnostics
    return {"resourceType": "OperationOutcome", "issue": [issue]}


@dataclass
class Fault:
    """A canned answer for the next matching FHIR request (token calls are never faulted)."""

    status: int = 503
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to hold the answer (released at once when the server stops)
    path_contains: str = ""


@dataclass
class LoggedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    status: int = 0


@dataclass
class Answer:
    status: int
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)


class FhirServer:
    def __init__(self, *, bearer_token: str = "", client_id: str = "", client_secret: str = "",
                 token_lifetime: int = 3600, ssl_context: ssl.SSLContext | None = None) -> None:
        self.bearer_token = bearer_token
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_lifetime = token_lifetime
        self.resources: dict[str, dict[str, dict[str, Any]]] = {}
        self.requests: list[LoggedRequest] = []
        self.faults: deque[Fault] = deque()
        self.tokens_issued = 0
        self.valid_tokens: set[str] = set()
        self._next_id = 0
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._httpd = _Httpd(("127.0.0.1", 0), _Handler)
        self._httpd.app = self
        self.scheme = "https" if ssl_context else "http"
        if ssl_context:  # a failed handshake is dropped by socketserver (SSLError is an OSError)
            self._httpd.socket = ssl_context.wrap_socket(self._httpd.socket, server_side=True)
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def root(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def base_url(self) -> str:
        return f"{self.root}/fhir"

    @property
    def token_url(self) -> str:
        return f"{self.root}/token"

    def start(self) -> FhirServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        with self._lock:
            for sock in list(self._sockets):  # idle keep-alive connections would block close
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        self._httpd.server_close()
        self._thread.join(10)

    def __enter__(self) -> FhirServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- scripting -------------------------------------------------------------------------
    def fail_next(self, n: int = 1, status: int = 503, body: dict[str, Any] | None = None,
                  headers: dict[str, str] | None = None, delay: float = 0.0,
                  path_contains: str = "") -> None:
        for _ in range(n):
            self.faults.append(Fault(status, body, dict(headers or {}), delay, path_contains))

    def revoke_tokens(self) -> None:
        with self._lock:
            self.valid_tokens.clear()

    def seed(self, resource: dict[str, Any]) -> dict[str, Any]:
        """Store a resource directly (no validation), as if another system had created it."""
        with self._lock:
            return self._store(resource["resourceType"], self._new_id(), resource, created=True).body or {}

    def all(self, resource_type: str) -> list[dict[str, Any]]:
        with self._lock:
            return [json.loads(json.dumps(r)) for r in self.resources.get(resource_type, {}).values()]

    def fhir_requests(self, method: str = "", path_contains: str = "") -> list[LoggedRequest]:
        return [r for r in list(self.requests) if r.path.startswith("/fhir/")
                and (not method or r.method == method) and path_contains in r.path]

    # -- request handling ------------------------------------------------------------------
    def handle(self, req: LoggedRequest) -> Answer:
        if req.path == "/token" and req.method == "POST":
            return self._token(req)
        if not req.path.startswith("/fhir/"):
            return Answer(404, outcome("not-found", "unknown path"))
        fault = self._take_fault(req.path)
        if fault is not None:
            if fault.delay and self._stopping.wait(fault.delay):
                return Answer(503, outcome("transient", "server stopping"))
            if fault.status:
                return Answer(fault.status, fault.body, fault.headers)
        denied = self._check_auth(req)
        if denied:
            return denied
        parts = req.path[len("/fhir/"):].strip("/").split("/")
        rtype, rid = parts[0], (parts[1] if len(parts) > 1 else "")
        if rtype not in MODELS or len(parts) > 2:
            return Answer(404, outcome("not-supported", f"no endpoint for {req.path}"))
        with self._lock:
            return self._route(req, rtype, rid)

    def _take_fault(self, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.path_contains in path:
                    self.faults.remove(fault)
                    return fault
        return None

    def _check_auth(self, req: LoggedRequest) -> Answer | None:
        if not (self.bearer_token or self.client_id):
            return None
        scheme, _, token = req.headers.get("authorization", "").partition(" ")
        with self._lock:
            ok = scheme.lower() == "bearer" and (
                (self.bearer_token and token == self.bearer_token) or token in self.valid_tokens)
        if ok:
            return None
        return Answer(401, outcome("login", "missing or invalid bearer token"),
                      {"WWW-Authenticate": 'Bearer error="invalid_token"'})

    def _token(self, req: LoggedRequest) -> Answer:
        form = {k: v[0] for k, v in parse_qs(req.body or "").items()}
        if form.get("grant_type") != "client_credentials":
            return Answer(400, {"error": "unsupported_grant_type"})
        if (form.get("client_id"), form.get("client_secret")) != (self.client_id, self.client_secret):
            return Answer(401, {"error": "invalid_client"})
        with self._lock:
            self.tokens_issued += 1
            token = f"tok-{self.tokens_issued}"
            self.valid_tokens.add(token)
        return Answer(200, {"access_token": token, "token_type": "Bearer",
                            "expires_in": self.token_lifetime})

    def _route(self, req: LoggedRequest, rtype: str, rid: str) -> Answer:
        if rid == "_search":  # search by POST: the criteria stay out of URLs and access logs
            if req.method != "POST":
                return Answer(405, outcome("not-supported", "_search takes POST"))
            if not req.headers.get("content-type", "").startswith(
                    "application/x-www-form-urlencoded"):
                return Answer(415, outcome("not-supported", "send the search as a form"))
            form = parse_qs(req.body or "") if isinstance(req.body, str) else {}
            return self._search(rtype, {**req.query, **form})
        if req.method == "GET" and rid:
            found = self.resources.get(rtype, {}).get(rid)
            return Answer(200, found) if found else Answer(404, outcome("not-found"))
        if req.method == "GET":
            return self._search(rtype, req.query)
        if req.method not in ("POST", "PUT"):
            return Answer(405, outcome("not-supported", f"{req.method} not supported"))
        if not req.headers.get("content-type", "").startswith(("application/fhir+json",
                                                                 "application/json")):
            return Answer(415, outcome("not-supported", "send application/fhir+json"))
        invalid = self._validate(rtype, req.body)
        if invalid:
            return invalid
        body: dict[str, Any] = req.body
        if req.method == "POST":
            cond = req.headers.get("if-none-exist", "")
            if cond:
                matches = self._matches(rtype, parse_qs(cond))
                if len(matches) > 1:
                    return Answer(412, outcome("duplicate", "If-None-Exist matched several"))
                if matches:
                    return Answer(200, matches[0], self._location(matches[0]))
            return self._store(rtype, self._new_id(), body, created=True)
        if rid:  # update as create is allowed for a client-chosen id
            if body.get("id") != rid:
                return Answer(400, outcome("invalid", "resource id must match the URL"))
            return self._store(rtype, rid, body, created=rid not in self.resources.get(rtype, {}))
        if not req.query:
            return Answer(400, outcome("invalid", "PUT needs an id or search criteria"))
        matches = self._matches(rtype, req.query)
        if len(matches) > 1:
            return Answer(412, outcome("multiple-matches", "conditional update matched several"))
        if matches:
            if body.get("id") not in (None, matches[0]["id"]):
                return Answer(400, outcome("invalid", "id does not match the matched resource"))
            return self._store(rtype, matches[0]["id"], body, created=False)
        if body.get("id"):
            return self._store(rtype, body["id"], body, created=True)
        return self._store(rtype, self._new_id(), body, created=True)

    def _validate(self, rtype: str, body: Any) -> Answer | None:
        if not isinstance(body, dict) or body.get("resourceType") != rtype:
            return Answer(400, outcome("structure", f"body must be a {rtype} resource"))
        try:
            MODELS[rtype].model_validate(body)
        except ValidationError as exc:
            return Answer(400, outcome("structure", str(exc)[:2000]))
        problems = appointment_problems(body) if rtype == "Appointment" else []
        if problems:
            return Answer(400, outcome("invariant", "; ".join(problems)))
        return None

    def _search(self, rtype: str, query: dict[str, list[str]]) -> Answer:
        unknown = set(query) - {"identifier", "_id"}
        if unknown:
            return Answer(400, outcome("not-supported", f"unknown search parameter {sorted(unknown)}"))
        matches = self._matches(rtype, query)
        return Answer(200, {
            "resourceType": "Bundle", "type": "searchset", "total": len(matches),
            "entry": [{"fullUrl": f"{self.base_url}/{rtype}/{r['id']}", "resource": r,
                       "search": {"mode": "match"}} for r in matches]})

    def _matches(self, rtype: str, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        found = list(self.resources.get(rtype, {}).values())
        for token in query.get("identifier", []):
            found = [r for r in found if _has_identifier(r, token)]
        for rid in query.get("_id", []):
            found = [r for r in found if r["id"] == rid]
        return found

    def _store(self, rtype: str, rid: str, body: dict[str, Any], created: bool) -> Answer:
        old = self.resources.get(rtype, {}).get(rid)
        version = int(old["meta"]["versionId"]) + 1 if old else 1
        stored = dict(body, id=rid, meta={
            "versionId": str(version),
            "lastUpdated": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")})
        self.resources.setdefault(rtype, {})[rid] = stored
        return Answer(201 if created else 200, stored, self._location(stored))

    def _location(self, resource: dict[str, Any]) -> dict[str, str]:
        vid = resource["meta"]["versionId"]
        return {"Location": f"{self.base_url}/{resource['resourceType']}/{resource['id']}/_history/{vid}",
                "ETag": f'W/"{vid}"', "Last-Modified": resource["meta"]["lastUpdated"]}

    def _new_id(self) -> str:
        self._next_id += 1
        return str(self._next_id)


def _has_identifier(resource: dict[str, Any], token: str) -> bool:
    # R4 search.html#escaping: `\|` `\,` `\$` `\\` are literal; an unescaped `|` splits
    parts = re.split(r"(?<!\\)\|", token, maxsplit=1)
    bar = len(parts) == 2
    system, value = (parts[0], parts[1]) if bar else ("", token)
    system, value = _unescape_search(system), _unescape_search(value)
    for ident in resource.get("identifier") or []:
        if ident.get("value") != value:
            continue
        if not bar or (system == "" and "system" not in ident) or ident.get("system") == system:
            return True
    return False


def _unescape_search(text: str) -> str:
    return re.sub(r"\\([\\|,$])", r"\1", text)


class _Httpd(ThreadingHTTPServer):
    app: FhirServer
    block_on_close = False  # held (delayed) answers must not stall stop()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that time out close their end; that is expected here


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Httpd

    def setup(self) -> None:
        super().setup()
        with self.server.app._lock:
            self.server.app._sockets.add(self.connection)

    def finish(self) -> None:
        with self.server.app._lock:
            self.server.app._sockets.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base class name
        pass

    def _serve(self) -> None:
        app = self.server.app
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        content_type = self.headers.get("Content-Type", "")
        body: Any = raw.decode("utf-8", "replace") if raw else None
        if raw and "json" in content_type:
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
        req = LoggedRequest(self.command, url.path, parse_qs(url.query),
                            {k.lower(): v for k, v in self.headers.items()}, body)
        app.requests.append(req)
        if raw and "json" in content_type and body is None:
            answer = Answer(400, outcome("structure", "body is not JSON"))
        else:
            answer = app.handle(req)
        req.status = answer.status
        data = json.dumps(answer.body).encode() if answer.body is not None else b""
        self.send_response(answer.status)
        for key, value in answer.headers.items():
            self.send_header(key, value)
        if data:
            self.send_header("Content-Type", "application/fhir+json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = _serve  # noqa: N815 - http.server naming
