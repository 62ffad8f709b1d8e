"""Parsers for the config sections with rules of their own: targets, the MLLP listener, OIDC,
password hashes and file modes (core/config.py calls them)."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from core.config_reader import ConfigError, Section
from core.config_sections import (
    ConsoleSettings,
    MllpListenerSettings,
    OidcSettings,
    TargetSettings,
)


def parse_oidc(data: Any, console: ConsoleSettings) -> OidcSettings:
    s = Section(data, "oidc")
    d = OidcSettings
    oidc = OidcSettings(
        issuer=s.get("issuer", str, "").rstrip("/"),
        client_id=s.get("client_id", str, ""),
        client_secret=s.get("client_secret", str, ""),
        scopes=s.get("scopes", str, d.scopes),
        username_claim=s.get("username_claim", str, d.username_claim),
        role_claim=s.get("role_claim", str, d.role_claim),
        viewer_values=s.strings("viewer_values"),
        operator_values=s.strings("operator_values"),
        admin_values=s.strings("admin_values"),
        label=s.get("label", str, d.label),
    )
    s.done()
    if not oidc.issuer:
        return oidc
    if not oidc.issuer.startswith(("https://", "http://127.0.0.1", "http://localhost")):
        raise ConfigError("oidc.issuer: must be an https:// URL")
    for key in ("client_id", "client_secret"):
        if not getattr(oidc, key):
            raise ConfigError(f"oidc.{key}: required when oidc.issuer is set")
    if "openid" not in oidc.scopes.split():
        raise ConfigError("oidc.scopes: must include openid")
    if not (oidc.viewer_values or oidc.operator_values or oidc.admin_values):
        raise ConfigError("oidc.viewer_values: map at least one role_claim value to a role "
                          "(viewer_values, operator_values, admin_values)")
    if not console.secret_key:
        raise ConfigError("console.secret_key: required when oidc.issuer is set")
    return oidc


def parse_target(s: Section) -> TargetSettings:
    d = TargetSettings
    kind = s.get("kind", str, required=True)
    if kind not in ("mllp", "file", "fhir"):
        raise ConfigError(f"{s.name}.kind: must be one of mllp, file, fhir (got {kind!r})")
    tz = s.get("timezone", str, "UTC")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(f"{s.name}.timezone: unknown time zone {tz!r}") from exc
    charset = s.get("charset", str, d.charset)
    if charset not in ("UNICODE UTF-8", "8859/1", "8859/15"):
        raise ConfigError(f"{s.name}.charset: must be 'UNICODE UTF-8', '8859/1' or '8859/15'")
    t = TargetSettings(
        name=s.get("name", str, required=True),
        kind=kind,
        host=s.get("host", str, d.host),
        port=s.get("port", int, 0),
        path=s.get("path", str, ""),
        url=s.get("url", str, "").rstrip("/"),
        timezone=tz,
        sending_application=s.get("sending_application", str, d.sending_application),
        sending_facility=s.get("sending_facility", str, d.sending_facility),
        receiving_application=s.get("receiving_application", str, d.receiving_application),
        receiving_facility=s.get("receiving_facility", str, d.receiving_facility),
        processing_id=s.get("processing_id", str, d.processing_id),
        charset=charset,
        allow_notes=s.get("allow_notes", bool, False),
        send_meeting_ended=s.get("send_meeting_ended", bool, False),
        status_case=s.get("status_case", str, "title"),
        transient_ack_codes=s.strings("transient_ack_codes", d.transient_ack_codes),
        permanent_ack_codes=s.strings("permanent_ack_codes", d.permanent_ack_codes),
        tls=s.get("tls", bool, False),
        tls_ca_file=s.get("tls_ca_file", str, ""),
        tls_cert_file=s.get("tls_cert_file", str, ""),
        tls_key_file=s.get("tls_key_file", str, ""),
        connect_timeout=s.get("connect_timeout", float, d.connect_timeout),
        read_timeout=s.get("read_timeout", float, d.read_timeout),
        max_frame_bytes=s.get("max_frame_bytes", int, d.max_frame_bytes),
        max_attempts=s.get("max_attempts", int, d.max_attempts),
        max_age_seconds=s.get("max_age_seconds", int, d.max_age_seconds),
        auth=s.get("auth", str, "none"),
        token=s.get("token", str, ""),
        token_url=s.get("token_url", str, ""),
        client_id=s.get("client_id", str, ""),
        client_secret=s.get("client_secret", str, ""),
        identifier_system=s.get("identifier_system", str, d.identifier_system),
        patient_identifier_system=s.get("patient_identifier_system", str, ""),
        ack_mode=s.get("ack_mode", str, d.ack_mode),
        accept_ack_type=s.get("accept_ack_type", str, d.accept_ack_type),
        application_ack_type=s.get("application_ack_type", str, d.application_ack_type),
        ehr_echoes=s.get("ehr_echoes", bool, d.ehr_echoes),
        file_mode=parse_file_mode(s),
    )
    s.done()
    check_ack_mode(t, s.name)
    if t.status_case not in ("title", "upper"):
        raise ConfigError(f"{s.name}.status_case: must be 'title' or 'upper'")
    if kind == "mllp" and not (0 < t.port < 65536):
        raise ConfigError(f"{s.name}.port: an MLLP target needs a port between 1 and 65535")
    if kind == "file" and not t.path:
        raise ConfigError(f"{s.name}.path: a file target needs a folder")
    if kind == "fhir" and not t.url:
        raise ConfigError(f"{s.name}.url: a FHIR target needs a base url")
    if t.auth not in ("none", "bearer", "oauth2"):
        raise ConfigError(f"{s.name}.auth: must be none, bearer or oauth2")
    return t


ACK_TYPES = ("AL", "NE", "ER", "SU")  # HL7 table 0155


def check_ack_mode(t: TargetSettings, name: str) -> None:
    if t.ack_mode not in ("original", "enhanced"):
        raise ConfigError(f"{name}.ack_mode: must be 'original' or 'enhanced'")
    for key in ("accept_ack_type", "application_ack_type"):
        if getattr(t, key) not in ACK_TYPES:
            raise ConfigError(f"{name}.{key}: must be one of AL, NE, ER, SU (HL7 table 0155)")
    if t.ack_mode == "enhanced" and not ({t.accept_ack_type, t.application_ack_type}
                                         & {"AL", "SU"}):
        raise ConfigError(f"{name}.application_ack_type: with accept_ack_type "
                          f"{t.accept_ack_type} the EHR would never confirm a message; "
                          "one of the two must be AL or SU")
def parse_mllp(s: Section) -> MllpListenerSettings:
    import ipaddress

    d = MllpListenerSettings
    m = MllpListenerSettings(
        max_connections=s.get("max_connections", int, d.max_connections),
        max_connections_per_peer=s.get("max_connections_per_peer", int,
                                       d.max_connections_per_peer),
        idle_timeout_seconds=s.get("idle_timeout_seconds", float, d.idle_timeout_seconds),
        frame_deadline_seconds=s.get("frame_deadline_seconds", float, d.frame_deadline_seconds),
        max_frame_bytes=s.get("max_frame_bytes", int, d.max_frame_bytes),
        allowed_peers=s.strings("allowed_peers"),
        tls_cert_file=s.get("tls_cert_file", str, ""),
        tls_key_file=s.get("tls_key_file", str, ""),
        tls_client_ca_file=s.get("tls_client_ca_file", str, ""),
    )
    s.done()
    for key in ("max_connections", "max_connections_per_peer", "idle_timeout_seconds",
                "frame_deadline_seconds", "max_frame_bytes"):
        if getattr(m, key) <= 0:
            raise ConfigError(f"mllp.{key}: must be positive")
    for i, peer in enumerate(m.allowed_peers):
        try:
            ipaddress.ip_network(peer, strict=False)
        except ValueError as exc:
            raise ConfigError(f"mllp.allowed_peers[{i}]: not an IP address or network "
                              f"({peer!r})") from exc
    if bool(m.tls_cert_file) != bool(m.tls_key_file):
        raise ConfigError("mllp.tls_cert_file, mllp.tls_key_file: set both or neither")
    if m.tls_client_ca_file and not m.tls_cert_file:
        raise ConfigError("mllp.tls_client_ca_file: needs tls_cert_file and tls_key_file")
    return m


MIN_SECRET_KEY_CHARS = 32


def strong_hash(pw: str) -> bool:
    """At least as strong as werkzeug's current defaults (scrypt 32768/8/1, pbkdf2 1e6)."""
    method = pw.split("$", 1)[0].split(":")
    try:
        if method[0] == "scrypt":
            n, r, p = (int(x) for x in (method[1:] + ["32768", "8", "1"])[:3])
            return n >= 32768 and r >= 8 and p >= 1
        if method[0] == "pbkdf2":
            digest = method[1] if len(method) > 1 else "sha256"
            iterations = int(method[2]) if len(method) > 2 else 1_000_000
            return digest in ("sha256", "sha512") and iterations >= 1_000_000
    except ValueError:
        return False
    return False


def parse_file_mode(s: Section) -> int:
    text = s.get("file_mode", str, "0640")
    try:
        mode = int(text, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o777 or mode & 0o002:
        raise ConfigError(f"{s.name}.file_mode: an octal mode like \"0640\" that is not "
                          f"world-writable (got {text!r})")
    return mode
