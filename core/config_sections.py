"""The config file's sections as frozen dataclasses (core/config.py validates the file into them).

The annotations are the file's rules (pydantic reads them; see core/config_reader.py for the types)
and `about(...)` is each key's description for the JSON Schema and the README table. Building one
directly (tests, `dataclasses.replace`) checks nothing: only the file is validated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal
from zoneinfo import ZoneInfo

from core.config_reader import (
    Bool,
    Int,
    NonNegInt,
    NonNegNum,
    Num,
    PosInt,
    PosNum,
    Str,
    Strings,
    Url,
    about,
    table,
)
from core.config_values import (
    Email,
    FileMode,
    IpNetworks,
    PasswordHash,
    RouteTargets,
    SecretKey,
    TimeZone,
    WebhookSecrets,
)

AckType = Literal["AL", "NE", "ER", "SU"]  # HL7 table 0155


@table
@dataclass(frozen=True)
class CalcomSettings:
    """Cal.com: webhook signing and API v2."""

    webhook_secrets: Annotated[WebhookSecrets, about("webhook signing secrets; several = rotation")]
    api_url: Annotated[Url, about("Cal.com API v2 base URL")] = "https://api.cal.com/v2"
    api_key: Annotated[Str, about("API v2 key (reconciliation, series cancels, EHR changes)")] = ""
    max_body_bytes: Annotated[Int, about("larger webhook bodies are refused")] = 256 * 1024
    bookings_api_version: Annotated[Str, about("`cal-api-version` of the bookings API")] = "2024-08-13"
    reconcile_interval_seconds: Annotated[Int, about("0 = off; needs `api_key`")] = 0  # 0 = off
    # the hidden event type that `api`-strategy providers book to hold EHR time
    blocker_event_type_id: Annotated[NonNegInt, about(
        "event type that `strategy = \"api\"` providers book to hold EHR time; 0 = by slug")] = 0
    blocker_event_type_slug: Annotated[Str, about("the blocker event type's slug")] = "ehr-hold"
    blocker_attendee_email: Annotated[Email, about("attendee of blocker bookings")] = (
        "ehr-hold@calehr.invalid")


@table
@dataclass(frozen=True)
class SecuritySettings:
    """Encryption of stored bodies and messages."""

    encryption_keys: Annotated[Strings, about(
        "Fernet keys: the first encrypts, all decrypt; `CALEHR_ENCRYPTION_KEYS` (comma separated) "
        "is put in front. Rotate: add a new key first")] = ()


@table
@dataclass(frozen=True)
class ProviderSettings:
    """One doctor: Cal.com organizer and EHR resource."""

    calcom_user: Annotated[Str, about("Cal.com username or email of the organizer")]
    ehr_id: Annotated[Str, about("the EHR's id for the provider (AIP/AIG resource)")]
    name: Annotated[Str, about("`Family^Given^^^Prefix`")]
    ics_token: Annotated[Str, about("token of the provider's busy-time ICS feed")] = ""
    strategy: Annotated[Literal["ics", "api"], about(
        "how EHR time is held in Cal.com: the ICS feed, or also blocker bookings")] = "ics"
    id_authority: Annotated[Str, about("assigning authority of `ehr_id`")] = ""
    fhir_id: Annotated[Str, about(
        "the EHR's FHIR Practitioner id: inbound `Practitioner/<fhir_id>` names this provider")] = ""


@table
@dataclass(frozen=True)
class EventTypeSettings:
    """A Cal.com event type and its EHR appointment type (AIS-3, SCH-7)."""

    slug: Annotated[Str, about("Cal.com event type slug")]
    code: Annotated[Str, about("EHR appointment type code")]
    name: Annotated[Str, about("EHR appointment type text")] = ""
    id: Annotated[Int | None, about("Cal.com event type id")] = None


@table
@dataclass(frozen=True)
class LocationSettings:
    """A Cal.com location and its EHR location (AIL-3)."""

    match: Annotated[Str, about(
        "substring of the Cal.com location, or a location type such as inPerson")]
    code: Annotated[Str, about("EHR location code")]
    name: Annotated[Str, about("EHR location text")] = ""


@table
@dataclass(frozen=True)
class PatientFieldSettings:
    """Which booking answers carry patient data."""

    dob_field: Annotated[Str, about("booking answer with the birth date (PID-7)")] = "dateOfBirth"
    id_field: Annotated[Str, about("booking answer with the patient id (PID-3)")] = ""
    id_authority: Annotated[Str, about("PID-3 assigning authority")] = ""
    id_type: Annotated[Str, about("PID-3 identifier type")] = "MB"
    phone_field: Annotated[Str, about("booking answer with the phone (PID-13)")] = (
        "attendeePhoneNumber")


@table
@dataclass(frozen=True)
class TargetSettings:
    """An EHR the bridge delivers to: MLLP, a folder of files, or FHIR."""

    name: Annotated[Str, about("unique name routes refer to")]
    kind: Annotated[Literal["mllp", "file", "fhir"], about("how the EHR is reached")]  # mllp | file | fhir
    host: Annotated[Str, about("mllp: EHR host")] = "127.0.0.1"
    port: Annotated[Int, about("mllp: EHR port (1-65535)")] = 0
    path: Annotated[Str, about("file: the folder SIU files are written to")] = ""  # file: folder
    url: Annotated[Url, about("fhir: base URL")] = ""  # fhir: base url
    timezone: Annotated[TimeZone, about("zone of the TQ1 times")] = "UTC"
    sending_application: Annotated[Str, about("MSH-3")] = "CALEHR"
    sending_facility: Annotated[Str, about("MSH-4")] = "CALCOM"
    receiving_application: Annotated[Str, about("MSH-5")] = "EHR"
    receiving_facility: Annotated[Str, about("MSH-6")] = "HOSPITAL"
    processing_id: Annotated[Str, about("MSH-11")] = "P"
    charset: Annotated[Literal["UNICODE UTF-8", "8859/1", "8859/15"], about(
        "MSH-18; 8859/1 for Latin-1 sites")] = "UNICODE UTF-8"  # MSH-18; "8859/1" for Latin-1 sites
    allow_notes: Annotated[Bool, about("send the booker's notes")] = False
    send_meeting_ended: Annotated[Bool, about(
        "false: MEETING_ENDED is recorded, not sent; true: S14 with SCH-25 Complete, FHIR "
        "`fulfilled`")] = False  # MEETING_ENDED → S14 Complete / FHIR fulfilled (opt-in)
    status_case: Annotated[Literal["title", "upper"], about(
        "filler status: title (Booked) or upper (BOOKED)")] = "title"  # title (Booked) | upper (BOOKED)
    transient_ack_codes: Annotated[Strings, about("ACK codes retried")] = ("AR", "CR")
    permanent_ack_codes: Annotated[Strings, about("ACK codes that make a dead letter")] = ("AE", "CE")
    tls: Annotated[Bool, about("mllp: speak TLS")] = False
    tls_ca_file: Annotated[Str, about("CA bundle that signs the EHR's certificate")] = ""
    tls_cert_file: Annotated[Str, about(
        "client certificate for mutual TLS (MLLP or FHIR)")] = ""  # client certificate for mutual TLS
    tls_key_file: Annotated[Str, about("key of `tls_cert_file`")] = ""
    connect_timeout: Annotated[Num, about("seconds")] = 5.0
    read_timeout: Annotated[Num, about("seconds")] = 30.0
    max_frame_bytes: Annotated[Int, about("mllp: larger ACK frames are refused")] = 1024 * 1024
    max_attempts: Annotated[Int, about("then a dead letter")] = 50
    max_age_seconds: Annotated[Int, about("an undelivered event older than this is a dead letter")] = (
        24 * 3600)
    auth: Annotated[Literal["none", "bearer", "oauth2"], about("fhir: how the bridge signs in")] = (
        "none")  # fhir: none | bearer | oauth2
    token: Annotated[Str, about("fhir: bearer token")] = ""
    token_url: Annotated[Str, about("fhir oauth2: token endpoint (client credentials)")] = ""
    client_id: Annotated[Str, about("fhir oauth2: client id")] = ""
    client_secret: Annotated[Str, about("fhir oauth2: client secret")] = ""
    identifier_system: Annotated[Str, about(
        "fhir: system of the Appointment identifier")] = "urn:calcom:appointment"
    patient_identifier_system: Annotated[Str, about(
        "fhir: Patient found by `POST Patient/_search`, else created with `If-None-Exist`")] = ""
    # mllp: original (MSH-15/16 empty; AA/AE/AR answer) | enhanced (MSH-15/16 below, table 0155)
    ack_mode: Annotated[Literal["original", "enhanced"], about(
        "mllp: `original` (MSH-15/16 empty, only AA/AE/AR answer) | `enhanced` (MSH-15/16 below)"
    )] = "original"
    accept_ack_type: Annotated[AckType, about("MSH-15 in enhanced mode")] = "AL"
    application_ack_type: Annotated[AckType, about(
        "MSH-16 in enhanced mode; a CA is final only when it asks for no application ACK")] = "AL"
    # the EHR sends SIU for appointments the bridge created (their echo may come late)
    ehr_echoes: Annotated[Bool, about(
        "the EHR echoes SIU for appointments the bridge created (false: only its current state counts)"
    )] = True
    file_mode: Annotated[FileMode, about(
        "file: permissions of each SIU file, an octal string such as \"0640\"; never world-writable",
        json_schema_extra={"default": "0640"})] = 0o640  # TOML string "0640"

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


@table
@dataclass(frozen=True)
class RouteSettings:
    """Which events go to which targets; no match = recorded as `unrouted`, never dropped."""

    targets: Annotated[RouteTargets, about("target names")]
    event_types: Annotated[Strings, about("match: event type slug or id")] = ()
    teams: Annotated[Strings, about("match: team")] = ()
    locations: Annotated[Strings, about("match: substring of the location")] = ()


@table
@dataclass(frozen=True)
class DeliverySettings:
    """Retries, ordering and the circuit breaker."""

    retry_base_seconds: Annotated[NonNegNum, about("first retry wait (doubling, with jitter)")] = 2.0
    retry_max_backoff_seconds: Annotated[NonNegNum, about("longest retry wait")] = 3600.0
    countdown_max_seconds: Annotated[NonNegNum, about(
        "longer waits go through the due-set; at most a quarter of the visibility timeout")] = 60.0
    order_wait_seconds: Annotated[NonNegNum, about(
        "how long an event waits for its predecessor (a cancel for its create)")] = 600.0
    circuit_failure_threshold: Annotated[NonNegInt, about("failures that open a circuit")] = 5
    circuit_open_seconds: Annotated[NonNegNum, about("first open time, doubling")] = 30.0
    circuit_max_open_seconds: Annotated[NonNegNum, about("longest open time")] = 600.0
    lock_ttl_seconds: Annotated[NonNegNum, about("a delivery queue's lock")] = 120.0
    sweep_interval_seconds: Annotated[NonNegNum, about("beat sweep period")] = 5.0
    stuck_event_seconds: Annotated[NonNegNum, about("an event no worker took up is re-queued")] = 60.0
    sweep_batch: Annotated[PosInt, about(
        "items each part of one sweep handles at most; the next tick continues")] = 1000
    appointment_lock_seconds: Annotated[NonNegNum, about(
        "how long a killed worker's lock blocks one appointment")] = 30.0


@table
@dataclass(frozen=True)
class WorkerSettings:
    """Celery worker limits."""

    visibility_timeout: Annotated[NonNegInt, about("Redis transport visibility timeout")] = 3600
    task_soft_time_limit: Annotated[NonNegInt, about("seconds")] = 240
    task_time_limit: Annotated[NonNegInt, about("seconds; below the visibility timeout")] = 300
    concurrency: Annotated[NonNegInt, about("worker processes")] = 2


@table
@dataclass(frozen=True)
class UserSettings:
    """A console user kept in the file (`calehr users` keeps others in Redis)."""

    username: Annotated[Str, about("login name")]
    password_hash: Annotated[PasswordHash, about(
        "werkzeug hash made by `calehr hash-password`")]  # werkzeug format
    role: Annotated[Literal["viewer", "operator", "admin"], about(
        "what the user may do in the console")]  # viewer | operator | admin


@table
@dataclass(frozen=True)
class ConsoleSettings:
    """The dead-letter console."""

    secret_key: Annotated[SecretKey, about(
        "signs session cookies, at least 32 characters; empty = console disabled")] = ""
    session_minutes: Annotated[NonNegInt, about("idle session lifetime")] = 30
    secure_cookies: Annotated[Bool, about("true behind HTTPS")] = False  # true behind HTTPS
    # login throttle per (user name, client address): this many tries at once, then each try
    # waits twice as long as the one before (from the base delay up to the max)
    login_free_attempts: Annotated[NonNegInt, about(
        "login tries per user name and address before the throttle")] = 5
    login_base_delay_seconds: Annotated[NonNegNum, about("first throttle delay, doubling")] = 1.0
    login_max_delay_seconds: Annotated[NonNegNum, about("longest throttle delay")] = 900.0
    trusted_proxy_hops: Annotated[NonNegInt, about(
        ">0: the client address is from X-Forwarded-For (that many hops)")] = 0
    max_request_bytes: Annotated[NonNegInt, about("larger console request bodies get 413")] = (
        1024 * 1024)


@table
@dataclass(frozen=True)
class OidcSettings:
    """Optional console sign-in through the hospital's OpenID provider (empty issuer = off)."""

    issuer: Annotated[Url, about("https URL; empty = off")] = ""
    client_id: Annotated[Str, about("client id")] = ""
    client_secret: Annotated[Str, about("client secret (`\"${VAR}\"`)")] = ""
    scopes: Annotated[Str, about("must include openid")] = "openid profile email"
    username_claim: Annotated[Str, about("console name `oidc:<value>`")] = "preferred_username"
    role_claim: Annotated[Str, about(
        "a string or a list of strings in the ID token or userinfo")] = "groups"
    viewer_values: Annotated[Strings, about(
        "claim values granting viewer; the highest role wins, none = refused and audited")] = ()
    operator_values: Annotated[Strings, about("claim values granting operator")] = ()
    admin_values: Annotated[Strings, about("claim values granting admin")] = ()
    label: Annotated[Str, about("the login page's \"Sign in with …\"")] = "hospital account"


@table
@dataclass(frozen=True)
class SpoolSettings:
    """Local fsync'd spool for webhooks that arrive while Redis is unreachable."""

    enabled: Annotated[Bool, about("spool while Redis is down")] = True
    path: Annotated[Str, about(
        "folder; default `<var_dir>/spool` (or `CALEHR_SPOOL_PATH`)")] = ""  # default: <var_dir>/spool
    max_bytes: Annotated[NonNegInt, about("full spool = 503")] = 256 * 1024 * 1024
    drain_interval_seconds: Annotated[NonNegNum, about("drainer period")] = 2.0


@table
@dataclass(frozen=True)
class RetentionSettings:
    """Data minimisation: how long patient data stays once nothing needs it."""

    event_body_days: Annotated[NonNegNum, about(
        "bodies and wire messages of events that reached a final state")] = 30.0
    closed_dead_letter_days: Annotated[NonNegNum, about("resolved or discarded dead letters")] = 90.0
    audit_entries: Annotated[NonNegInt, about(
        "the bridge's own (system) audit entries, newest kept")] = 100_000
    run_interval_seconds: Annotated[NonNegNum, about("retention run period")] = 3600.0
    audit_days: Annotated[NonNegNum, about(
        "people's actions and failed-login streaks, kept by age (6 years)")] = 2190.0


@table
@dataclass(frozen=True)
class InboundSettings:
    """The reverse direction: what the EHR may send us."""

    fhir_token: Annotated[Str, about(
        "bearer token for FHIR inbound (`/fhir/Appointment`, `/fhir/Slot`); empty = refused")] = ""


@table
@dataclass(frozen=True)
class WebSettings:
    """The web process."""

    host: Annotated[Str, about("listen address")] = "127.0.0.1"
    port: Annotated[NonNegInt, about("listen port")] = 8000
    public_url: Annotated[Str, about("external URL (OIDC redirect); else the request's host")] = ""


@table
@dataclass(frozen=True)
class MllpListenerSettings:
    """The inbound MLLP listener: what a peer on the hospital network may do to it."""

    max_connections: Annotated[PosInt, about("connections at once")] = 256
    max_connections_per_peer: Annotated[PosInt, about(
        "one address cannot take every slot")] = 32
    idle_timeout_seconds: Annotated[PosNum, about(
        "no complete frame for this long: closed")] = 300.0
    frame_deadline_seconds: Annotated[PosNum, about(
        "a frame must end this long after its first byte")] = 30.0
    max_frame_bytes: Annotated[PosInt, about("larger frames get AR")] = 1024 * 1024
    allowed_peers: Annotated[IpNetworks, about("IP addresses or networks; empty = any")] = ()
    tls_cert_file: Annotated[Str, about(
        "set with tls_key_file: the listener speaks TLS only")] = ""
    tls_key_file: Annotated[Str, about("key of `tls_cert_file`")] = ""
    tls_client_ca_file: Annotated[Str, about(
        "set: every peer must show a certificate from this CA")] = ""


@table
@dataclass(frozen=True)
class RedisSettings:
    """How sure an acknowledged write is (core/replication.py), and one beat across hosts."""

    replicas_to_confirm: Annotated[NonNegInt, about(
        "replicas that must hold a write before the bridge acknowledges it (Redis WAIT); 0 = off"
    )] = 0
    replica_wait_ms: Annotated[PosInt, about("how long to wait for them (ms)")] = 500
    beat_lock_seconds: Annotated[PosNum, about(
        "one `celery beat` at a time across hosts: the leader's lock lasts this long")] = 30.0

