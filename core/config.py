"""Settings: one TOML file, parsed strictly once at start.

`${VAR}` in any string value is read from the environment. Every error names the key.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.config_parts import MIN_SECRET_KEY_CHARS, parse_mllp, parse_oidc, parse_target, strong_hash
from core.config_reader import ConfigError, Section, check_fernet_keys, dataclass_section, expand, table_list
from core.config_sections import (
    CalcomSettings,
    ConsoleSettings,
    DeliverySettings,
    EventTypeSettings,
    InboundSettings,
    LocationSettings,
    MllpListenerSettings,
    OidcSettings,
    PatientFieldSettings,
    ProviderSettings,
    RetentionSettings,
    RouteSettings,
    SecuritySettings,
    SpoolSettings,
    TargetSettings,
    UserSettings,
    WebSettings,
    WorkerSettings,
)

__all__ = [
    "ConfigError", "Settings", "parse_settings", "CalcomSettings", "SecuritySettings",
    "ProviderSettings", "EventTypeSettings", "LocationSettings", "PatientFieldSettings",
    "TargetSettings", "RouteSettings", "DeliverySettings", "WorkerSettings", "UserSettings",
    "ConsoleSettings", "OidcSettings", "SpoolSettings", "RetentionSettings", "InboundSettings",
    "WebSettings", "MllpListenerSettings",
]

DEFAULT_CONFIG = "calehr.toml"
NO_CONFIG = ("no config: set CALEHR_CONFIG to your calehr.toml, or run `calehr up` once in this "
             "folder (it writes var/calehr.toml with fresh secrets)")


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
        return parse_settings(expand(raw, env, ""), env, source)


def parse_settings(raw: dict[str, Any], env: Mapping[str, str], source: str = "") -> Settings:
    top = Section(raw, "")
    top.used.update({"calcom", "security", "providers", "event_types", "locations", "targets",
                     "routes", "patient", "delivery", "worker", "web", "console", "users", "spool",
                     "retention", "inbound", "oidc", "mllp"})

    cal = Section(raw.get("calcom", {}), "calcom")
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

    sec = Section(raw.get("security", {}), "security")
    keys = sec.strings("encryption_keys")
    env_keys = env.get("CALEHR_ENCRYPTION_KEYS", "")
    if env_keys:
        keys = tuple(k.strip() for k in env_keys.split(",") if k.strip()) + keys
    if not keys:
        raise ConfigError("security.encryption_keys: at least one Fernet key is required "
                          "(or set CALEHR_ENCRYPTION_KEYS)")
    check_fernet_keys(keys)
    sec.done()

    providers = []
    for s in table_list(raw, "providers"):
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
    for s in table_list(raw, "event_types"):
        event_types.append(EventTypeSettings(
            slug=s.get("slug", str, required=True),
            code=s.get("code", str, required=True),
            name=s.get("name", str, ""),
            id=s.get("id", int, None),
        ))
        s.done()

    locations = []
    for s in table_list(raw, "locations"):
        locations.append(LocationSettings(
            match=s.get("match", str, required=True),
            code=s.get("code", str, required=True),
            name=s.get("name", str, ""),
        ))
        s.done()

    targets = [parse_target(s) for s in table_list(raw, "targets")]
    names = [t.name for t in targets]
    for i, name in enumerate(names):
        if names.index(name) != i:
            raise ConfigError(f"targets[{i}].name: duplicate target name {name!r}")

    routes = []
    for s in table_list(raw, "routes"):
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

    pat = Section(raw.get("patient", {}), "patient")
    patient = PatientFieldSettings(
        dob_field=pat.get("dob_field", str, "dateOfBirth"),
        id_field=pat.get("id_field", str, ""),
        id_authority=pat.get("id_authority", str, ""),
        id_type=pat.get("id_type", str, "MB"),
        phone_field=pat.get("phone_field", str, "attendeePhoneNumber"),
    )
    pat.done()

    delivery = dataclass_section(raw, "delivery", DeliverySettings)
    worker = dataclass_section(raw, "worker", WorkerSettings)
    if delivery.sweep_batch < 1:
        raise ConfigError("delivery.sweep_batch: must be at least 1")
    if worker.task_time_limit >= worker.visibility_timeout:
        raise ConfigError("worker.task_time_limit: must be below worker.visibility_timeout")
    if delivery.countdown_max_seconds * 4 > worker.visibility_timeout:
        raise ConfigError("delivery.countdown_max_seconds: must stay well below "
                          "worker.visibility_timeout (at most a quarter)")
    web = dataclass_section(raw, "web", WebSettings)
    console = dataclass_section(raw, "console", ConsoleSettings)
    spool = dataclass_section(raw, "spool", SpoolSettings)
    if not spool.path and env.get("CALEHR_SPOOL_PATH"):
        spool = SpoolSettings(spool.enabled, env["CALEHR_SPOOL_PATH"], spool.max_bytes,
                              spool.drain_interval_seconds)
    retention = dataclass_section(raw, "retention", RetentionSettings)
    inbound = dataclass_section(raw, "inbound", InboundSettings)
    mllp = parse_mllp(Section(raw.get("mllp", {}), "mllp"))
    users = []
    for s in table_list(raw, "users"):
        role = s.get("role", str, required=True)
        if role not in ("viewer", "operator", "admin"):
            raise ConfigError(f"{s.name}.role: must be viewer, operator or admin")
        pw = s.get("password_hash", str, required=True)
        if not pw.startswith(("scrypt:", "pbkdf2:")):
            raise ConfigError(f"{s.name}.password_hash: not a password hash "
                              "(make one with `calehr hash-password`)")
        if not strong_hash(pw):
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

    oidc = parse_oidc(raw.get("oidc", {}), console)

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
