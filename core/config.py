"""Settings: one TOML file, parsed strictly once at start.

`${VAR}` in any string value is read from the environment. Every error names the key.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_CONFIG = "calehr.toml"
NO_CONFIG = ("no config: set CALEHR_CONFIG to your calehr.toml, or run `calehr up` once in this "
             "folder (it writes var/calehr.toml with fresh secrets)")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ConfigError(ValueError):
    """A config value is missing or wrong; the message names the key."""


@dataclass(frozen=True)
class CalcomSettings:
    webhook_secrets: tuple[str, ...]
    api_url: str = "https://api.cal.com/v2"
    api_key: str = ""
    max_body_bytes: int = 256 * 1024
    bookings_api_version: str = "2024-08-13"
    reconcile_interval_seconds: int = 0  # 0 = off
    # the hidden event type that `api`-strategy providers book to hold EHR time
    blocker_event_type_id: int = 0  # 0 = find it by slug under the provider's username
    blocker_event_type_slug: str = "ehr-hold"
    blocker_attendee_email: str = "ehr-hold@calehr.invalid"


@dataclass(frozen=True)
class SecuritySettings:
    encryption_keys: tuple[str, ...]


@dataclass(frozen=True)
class ProviderSettings:
    calcom_user: str  # Cal.com username or email of the organizer
    ehr_id: str
    name: str
    ics_token: str = ""
    strategy: str = "ics"  # ics | api
    id_authority: str = ""
    fhir_id: str = ""  # the EHR's FHIR Practitioner id: inbound `Practitioner/<fhir_id>` matches


@dataclass(frozen=True)
class EventTypeSettings:
    slug: str
    code: str
    name: str = ""
    id: int | None = None


@dataclass(frozen=True)
class LocationSettings:
    match: str  # substring of the Cal.com location, or a location type such as inPerson
    code: str
    name: str = ""


@dataclass(frozen=True)
class PatientFieldSettings:
    dob_field: str = "dateOfBirth"
    id_field: str = ""
    id_authority: str = ""
    id_type: str = "MB"
    phone_field: str = "attendeePhoneNumber"


@dataclass(frozen=True)
class TargetSettings:
    name: str
    kind: str  # mllp | file | fhir
    host: str = "127.0.0.1"
    port: int = 0
    path: str = ""  # file: folder
    url: str = ""  # fhir: base url
    timezone: str = "UTC"
    sending_application: str = "CALEHR"
    sending_facility: str = "CALCOM"
    receiving_application: str = "EHR"
    receiving_facility: str = "HOSPITAL"
    processing_id: str = "P"
    charset: str = "UNICODE UTF-8"  # MSH-18; "8859/1" for Latin-1 sites
    allow_notes: bool = False
    send_meeting_ended: bool = False  # MEETING_ENDED → S14 Complete / FHIR fulfilled (opt-in)
    status_case: str = "title"  # title (Booked) | upper (BOOKED)
    transient_ack_codes: tuple[str, ...] = ("AR", "CR")
    permanent_ack_codes: tuple[str, ...] = ("AE", "CE")
    tls: bool = False
    tls_ca_file: str = ""
    tls_cert_file: str = ""  # client certificate for mutual TLS (MLLP or FHIR)
    tls_key_file: str = ""
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    max_frame_bytes: int = 1024 * 1024
    max_attempts: int = 50
    max_age_seconds: int = 24 * 3600
    auth: str = "none"  # fhir: none | bearer | oauth2
    token: str = ""
    token_url: str = ""
    client_id: str = ""
    client_secret: str = ""
    identifier_system: str = "urn:calcom:appointment"
    patient_identifier_system: str = ""
    # mllp: original (MSH-15/16 empty; AA/AE/AR answer) | enhanced (MSH-15/16 below, table 0155)
    ack_mode: str = "original"
    accept_ack_type: str = "AL"  # MSH-15 in enhanced mode
    application_ack_type: str = "AL"  # MSH-16 in enhanced mode
    # the EHR sends SIU for appointments the bridge created (their echo may come late)
    ehr_echoes: bool = True
    file_mode: int = 0o640  # file: permissions of each SIU file (TOML string "0640")

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


@dataclass(frozen=True)
class RouteSettings:
    targets: tuple[str, ...]
    event_types: tuple[str, ...] = ()
    teams: tuple[str, ...] = ()
    locations: tuple[str, ...] = ()


@dataclass(frozen=True)
class DeliverySettings:
    retry_base_seconds: float = 2.0
    retry_max_backoff_seconds: float = 3600.0
    countdown_max_seconds: float = 60.0  # longer waits go through the due-set
    order_wait_seconds: float = 600.0  # how long an event waits for its predecessor
    circuit_failure_threshold: int = 5
    circuit_open_seconds: float = 30.0
    circuit_max_open_seconds: float = 600.0
    lock_ttl_seconds: float = 120.0
    sweep_interval_seconds: float = 5.0
    stuck_event_seconds: float = 60.0
    appointment_lock_seconds: float = 30.0  # a killed worker's lock on one appointment lasts this


@dataclass(frozen=True)
class WorkerSettings:
    visibility_timeout: int = 3600
    task_soft_time_limit: int = 240
    task_time_limit: int = 300
    concurrency: int = 2


@dataclass(frozen=True)
class UserSettings:
    username: str
    password_hash: str  # werkzeug format, made by `calehr hash-password`
    role: str  # viewer | operator | admin


@dataclass(frozen=True)
class ConsoleSettings:
    secret_key: str = ""  # signs session cookies; empty = console disabled
    session_minutes: int = 30
    secure_cookies: bool = False  # true behind HTTPS
    # login throttle per (user name, client address): this many tries at once, then each try
    # waits twice as long as the one before (from the base delay up to the max)
    login_free_attempts: int = 5
    login_base_delay_seconds: float = 1.0
    login_max_delay_seconds: float = 900.0
    trusted_proxy_hops: int = 0  # >0: the client address is from X-Forwarded-For (that many hops)
    max_request_bytes: int = 1024 * 1024  # console request bodies larger than this get 413


@dataclass(frozen=True)
class OidcSettings:
    """Optional console sign-in through the hospital's OpenID provider (empty issuer = off)."""

    issuer: str = ""
    client_id: str = ""
    client_secret: str = ""
    scopes: str = "openid profile email"
    username_claim: str = "preferred_username"
    role_claim: str = "groups"  # a string or a list of strings in the ID token or userinfo
    viewer_values: tuple[str, ...] = ()  # claim values that grant each role; the highest wins
    operator_values: tuple[str, ...] = ()
    admin_values: tuple[str, ...] = ()
    label: str = "hospital account"  # "Sign in with <label>"


@dataclass(frozen=True)
class SpoolSettings:
    """Local fsync'd spool for webhooks that arrive while Redis is unreachable."""

    enabled: bool = True
    path: str = ""  # default: <var_dir>/spool
    max_bytes: int = 256 * 1024 * 1024
    drain_interval_seconds: float = 2.0


@dataclass(frozen=True)
class RetentionSettings:
    """Data minimisation: how long patient data stays once nothing needs it."""

    event_body_days: float = 30.0  # bodies of events that reached a final state
    closed_dead_letter_days: float = 90.0  # resolved or discarded dead letters
    audit_entries: int = 100_000  # the bridge's own (system) entries, newest kept
    run_interval_seconds: float = 3600.0
    audit_days: float = 2190.0  # people's actions and failed-login streaks: kept by age (6 years)


@dataclass(frozen=True)
class InboundSettings:
    """The reverse direction: what the EHR may send us."""

    fhir_token: str = ""  # bearer token for /fhir/Appointment and /fhir/Slot; empty = refused


@dataclass(frozen=True)
class WebSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str = ""


@dataclass(frozen=True)
class MllpListenerSettings:
    """`calehr mllp`: what a peer on the hospital network may do to the inbound listener."""

    max_connections: int = 256
    max_connections_per_peer: int = 32  # one address cannot take every slot
    idle_timeout_seconds: float = 300.0  # no complete frame for this long: closed
    frame_deadline_seconds: float = 30.0  # a frame must end this long after its first byte
    max_frame_bytes: int = 1024 * 1024
    allowed_peers: tuple[str, ...] = ()  # IP addresses or networks; empty = any address
    tls_cert_file: str = ""  # set with tls_key_file: the listener speaks TLS only
    tls_key_file: str = ""
    tls_client_ca_file: str = ""  # set: every peer must show a certificate from this CA


@dataclass(frozen=True)
class Settings:
    calcom: CalcomSettings
    security: SecuritySettings
    redis_url: str
    providers: tuple[ProviderSettings, ...] = ()
    event_types: tuple[EventTypeSettings, ...] = ()
    locations: tuple[LocationSettings, ...] = ()
    targets: tuple[TargetSettings, ...] = ()
    routes: tuple[RouteSettings, ...] = ()
    patient: PatientFieldSettings = field(default_factory=PatientFieldSettings)
    delivery: DeliverySettings = field(default_factory=DeliverySettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    web: WebSettings = field(default_factory=WebSettings)
    console: ConsoleSettings = field(default_factory=ConsoleSettings)
    spool: SpoolSettings = field(default_factory=SpoolSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    inbound: InboundSettings = field(default_factory=InboundSettings)
    mllp: MllpListenerSettings = field(default_factory=MllpListenerSettings)
    users: tuple[UserSettings, ...] = ()
    oidc: OidcSettings = field(default_factory=OidcSettings)
    key_prefix: str = "calehr"
    var_dir: str = "var"
    source: str = ""

    def target(self, name: str) -> TargetSettings:
        for target in self.targets:
            if target.name == name:
                return target
        raise KeyError(name)

    @classmethod
    def load(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        path = env.get("CALEHR_CONFIG") or DEFAULT_CONFIG
        if not env.get("CALEHR_CONFIG") and not Path(path).exists():
            # never the bundled example: its secrets are public
            raise ConfigError(NO_CONFIG)
        try:
            text = Path(path).read_text("utf-8")
        except OSError as exc:
            raise ConfigError(f"CALEHR_CONFIG: cannot read {path}: {exc.strerror}") from exc
        return cls.from_toml(text, env, source=path)

    @classmethod
    def from_toml(cls, text: str, env: Mapping[str, str], source: str = "") -> Settings:
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source or 'config'}: not valid TOML: {exc}") from exc
        return parse_settings(_expand(raw, env, ""), env, source)


def _expand(value: Any, env: Mapping[str, str], key: str) -> Any:
    if isinstance(value, str):

        def repl(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in env:
                raise ConfigError(f"{key}: environment variable {name} is not set")
            return env[name]

        return _VAR.sub(repl, value)
    if isinstance(value, list):
        return [_expand(v, env, f"{key}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _expand(v, env, f"{key}.{k}" if key else k) for k, v in value.items()}
    return value


class _Section:
    """Reads one table strictly: wrong types and unknown keys are errors naming the key."""

    def __init__(self, data: Any, name: str) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{name}: must be a table")
        self.data = dict(data)
        self.name = name
        self.used: set[str] = set()

    def _key(self, key: str) -> str:
        return f"{self.name}.{key}" if self.name else key

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ..., *,
            required: bool = False) -> Any:
        self.used.add(key)
        if key not in self.data:
            if required or default is ...:
                raise ConfigError(f"{self._key(key)}: required")
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            raise ConfigError(f"{self._key(key)}: expected {_names(kinds)}, got a boolean")
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kinds):
            raise ConfigError(f"{self._key(key)}: expected {_names(kinds)}, got {type(value).__name__}")
        return value

    def strings(self, key: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        value = self.get(key, (list, str), list(default))
        if isinstance(value, str):
            value = [value]
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise ConfigError(f"{self._key(key)}[{i}]: expected a string")
        return tuple(value)

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise ConfigError(f"{self._key(unknown[0])}: unknown key")


def _names(kinds: tuple[type, ...]) -> str:
    words = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
             list: "a list", dict: "a table"}
    return " or ".join(words.get(k, k.__name__) for k in kinds)


def _table_list(raw: dict[str, Any], key: str) -> list[_Section]:
    value = raw.get(key, [])
    if not isinstance(value, list):
        raise ConfigError(f"{key}: must be an array of tables ([[{key}]])")
    return [_Section(item, f"{key}[{i}]") for i, item in enumerate(value)]


def parse_settings(raw: dict[str, Any], env: Mapping[str, str], source: str = "") -> Settings:
    top = _Section(raw, "")
    top.used.update({"calcom", "security", "providers", "event_types", "locations", "targets",
                     "routes", "patient", "delivery", "worker", "web", "console", "users", "spool",
                     "retention", "inbound", "oidc", "mllp"})

    cal = _Section(raw.get("calcom", {}), "calcom")
    secrets = cal.strings("webhook_secrets")
    if not secrets or any(not s for s in secrets):
        raise ConfigError("calcom.webhook_secrets: at least one non-empty secret is required")
    calcom = CalcomSettings(
        webhook_secrets=secrets,
        api_url=cal.get("api_url", str, CalcomSettings.api_url).rstrip("/"),
        api_key=cal.get("api_key", str, ""),
        max_body_bytes=cal.get("max_body_bytes", int, CalcomSettings.max_body_bytes),
        bookings_api_version=cal.get("bookings_api_version", str, "2024-08-13"),
        reconcile_interval_seconds=cal.get("reconcile_interval_seconds", int, 0),
        blocker_event_type_id=cal.get("blocker_event_type_id", int, 0),
        blocker_event_type_slug=cal.get("blocker_event_type_slug", str,
                                        CalcomSettings.blocker_event_type_slug),
        blocker_attendee_email=cal.get("blocker_attendee_email", str,
                                       CalcomSettings.blocker_attendee_email),
    )
    cal.done()
    if calcom.blocker_event_type_id < 0:
        raise ConfigError("calcom.blocker_event_type_id: must not be negative")
    if not calcom.blocker_event_type_slug and not calcom.blocker_event_type_id:
        raise ConfigError("calcom.blocker_event_type_slug: required when "
                          "calcom.blocker_event_type_id is not set")
    if "@" not in calcom.blocker_attendee_email:
        raise ConfigError("calcom.blocker_attendee_email: must be an email address")

    sec = _Section(raw.get("security", {}), "security")
    keys = sec.strings("encryption_keys")
    env_keys = env.get("CALEHR_ENCRYPTION_KEYS", "")
    if env_keys:
        keys = tuple(k.strip() for k in env_keys.split(",") if k.strip()) + keys
    if not keys:
        raise ConfigError("security.encryption_keys: at least one Fernet key is required "
                          "(or set CALEHR_ENCRYPTION_KEYS)")
    _check_fernet_keys(keys)
    sec.done()

    providers = []
    for s in _table_list(raw, "providers"):
        strategy = s.get("strategy", str, "ics")
        if strategy not in ("ics", "api"):
            raise ConfigError(f"{s.name}.strategy: must be 'ics' or 'api'")
        providers.append(ProviderSettings(
            calcom_user=s.get("calcom_user", str, required=True),
            ehr_id=s.get("ehr_id", str, required=True),
            name=s.get("name", str, required=True),
            ics_token=s.get("ics_token", str, ""),
            strategy=strategy,
            id_authority=s.get("id_authority", str, ""),
            fhir_id=s.get("fhir_id", str, ""),
        ))
        s.done()

    event_types = []
    for s in _table_list(raw, "event_types"):
        event_types.append(EventTypeSettings(
            slug=s.get("slug", str, required=True),
            code=s.get("code", str, required=True),
            name=s.get("name", str, ""),
            id=s.get("id", int, None),
        ))
        s.done()

    locations = []
    for s in _table_list(raw, "locations"):
        locations.append(LocationSettings(
            match=s.get("match", str, required=True),
            code=s.get("code", str, required=True),
            name=s.get("name", str, ""),
        ))
        s.done()

    targets = [_parse_target(s) for s in _table_list(raw, "targets")]
    names = [t.name for t in targets]
    for i, name in enumerate(names):
        if names.index(name) != i:
            raise ConfigError(f"targets[{i}].name: duplicate target name {name!r}")

    routes = []
    for s in _table_list(raw, "routes"):
        route = RouteSettings(
            targets=s.strings("targets"),
            event_types=s.strings("event_types"),
            teams=s.strings("teams"),
            locations=s.strings("locations"),
        )
        if not route.targets:
            raise ConfigError(f"{s.name}.targets: at least one target is required")
        for t in route.targets:
            if t not in names:
                raise ConfigError(f"{s.name}.targets: unknown target {t!r}")
        routes.append(route)
        s.done()

    pat = _Section(raw.get("patient", {}), "patient")
    patient = PatientFieldSettings(
        dob_field=pat.get("dob_field", str, "dateOfBirth"),
        id_field=pat.get("id_field", str, ""),
        id_authority=pat.get("id_authority", str, ""),
        id_type=pat.get("id_type", str, "MB"),
        phone_field=pat.get("phone_field", str, "attendeePhoneNumber"),
    )
    pat.done()

    delivery = _dataclass_section(raw, "delivery", DeliverySettings)
    worker = _dataclass_section(raw, "worker", WorkerSettings)
    if worker.task_time_limit >= worker.visibility_timeout:
        raise ConfigError("worker.task_time_limit: must be below worker.visibility_timeout")
    if delivery.countdown_max_seconds * 4 > worker.visibility_timeout:
        raise ConfigError("delivery.countdown_max_seconds: must stay well below "
                          "worker.visibility_timeout (at most a quarter)")
    web = _dataclass_section(raw, "web", WebSettings)
    console = _dataclass_section(raw, "console", ConsoleSettings)
    spool = _dataclass_section(raw, "spool", SpoolSettings)
    if not spool.path and env.get("CALEHR_SPOOL_PATH"):
        spool = SpoolSettings(spool.enabled, env["CALEHR_SPOOL_PATH"], spool.max_bytes,
                              spool.drain_interval_seconds)
    retention = _dataclass_section(raw, "retention", RetentionSettings)
    inbound = _dataclass_section(raw, "inbound", InboundSettings)
    mllp = _parse_mllp(_Section(raw.get("mllp", {}), "mllp"))
    users = []
    for s in _table_list(raw, "users"):
        role = s.get("role", str, required=True)
        if role not in ("viewer", "operator", "admin"):
            raise ConfigError(f"{s.name}.role: must be viewer, operator or admin")
        pw = s.get("password_hash", str, required=True)
        if not pw.startswith(("scrypt:", "pbkdf2:")):
            raise ConfigError(f"{s.name}.password_hash: not a password hash "
                              "(make one with `calehr hash-password`)")
        if not _strong_hash(pw):
            raise ConfigError(f"{s.name}.password_hash: weaker than the current default (scrypt "
                              "N>=32768 r>=8, or pbkdf2 sha256/sha512 with >=1000000 "
                              "iterations); make a new one with `calehr hash-password`")
        users.append(UserSettings(username=s.get("username", str, required=True),
                                  password_hash=pw, role=role))
        s.done()
    if users and not console.secret_key:
        raise ConfigError("console.secret_key: required when [[users]] are configured")
    if console.secret_key and len(console.secret_key) < MIN_SECRET_KEY_CHARS:
        raise ConfigError(f"console.secret_key: at least {MIN_SECRET_KEY_CHARS} characters "
                          "(make one with `python3 -c 'import secrets; "
                          "print(secrets.token_urlsafe(32))'`)")

    oidc = _parse_oidc(raw.get("oidc", {}), console)

    key_prefix = top.get("key_prefix", str, "calehr")
    var_dir = top.get("var_dir", str, "var")
    top.done()

    redis_url = env.get("REDIS_URL", "")
    return Settings(
        calcom=calcom, security=SecuritySettings(keys), redis_url=redis_url,
        providers=tuple(providers), event_types=tuple(event_types), locations=tuple(locations),
        targets=tuple(targets), routes=tuple(routes), patient=patient, delivery=delivery,
        worker=worker, web=web, console=console, spool=spool, retention=retention,
        inbound=inbound, mllp=mllp, users=tuple(users), oidc=oidc, key_prefix=key_prefix,
        var_dir=var_dir, source=source,
    )


def _parse_oidc(data: Any, console: ConsoleSettings) -> OidcSettings:
    s = _Section(data, "oidc")
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


def _parse_target(s: _Section) -> TargetSettings:
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
        file_mode=_file_mode(s),
    )
    s.done()
    _check_ack_mode(t, s.name)
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


_ACK_TYPES = ("AL", "NE", "ER", "SU")  # HL7 table 0155


def _check_ack_mode(t: TargetSettings, name: str) -> None:
    if t.ack_mode not in ("original", "enhanced"):
        raise ConfigError(f"{name}.ack_mode: must be 'original' or 'enhanced'")
    for key in ("accept_ack_type", "application_ack_type"):
        if getattr(t, key) not in _ACK_TYPES:
            raise ConfigError(f"{name}.{key}: must be one of AL, NE, ER, SU (HL7 table 0155)")
    if t.ack_mode == "enhanced" and not ({t.accept_ack_type, t.application_ack_type}
                                         & {"AL", "SU"}):
        raise ConfigError(f"{name}.application_ack_type: with accept_ack_type "
                          f"{t.accept_ack_type} the EHR would never confirm a message; "
                          "one of the two must be AL or SU")
def _parse_mllp(s: _Section) -> MllpListenerSettings:
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


def _strong_hash(pw: str) -> bool:
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


def _file_mode(s: _Section) -> int:
    text = s.get("file_mode", str, "0640")
    try:
        mode = int(text, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o777 or mode & 0o002:
        raise ConfigError(f"{s.name}.file_mode: an octal mode like \"0640\" that is not "
                          f"world-writable (got {text!r})")
    return mode


def _dataclass_section(raw: dict[str, Any], name: str, cls: type) -> Any:
    s = _Section(raw.get(name, {}), name)
    values = {}
    for f in cls.__dataclass_fields__.values():
        kind = {"int": int, "float": float, "str": str, "bool": bool}[str(f.type)]
        values[f.name] = s.get(f.name, kind, f.default)
    s.done()
    for key, value in values.items():
        if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
            raise ConfigError(f"{name}.{key}: must not be negative")
    return cls(**values)


def _check_fernet_keys(keys: tuple[str, ...]) -> None:
    from cryptography.fernet import Fernet

    for i, key in enumerate(keys):
        try:
            Fernet(key)
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                f"security.encryption_keys[{i}]: not a Fernet key (32 url-safe base64 bytes)"
            ) from exc
