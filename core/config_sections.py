"""The config file's sections as frozen dataclasses (core/config.py parses into them)."""

from __future__ import annotations

from dataclasses import dataclass
from zoneinfo import ZoneInfo


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
    sweep_batch: int = 1000  # items each part of one sweep handles at most; the next continues
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
