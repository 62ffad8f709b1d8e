"""Settings: one TOML file, parsed strictly once at start.

`${VAR}` in any string value is read from the environment. The section dataclasses' annotations
are the file's rules (pydantic v2 validates the file into them, core/config_sections.py); rules
across fields follow (core/config_parts.py). Every error names the key.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import TypeAdapter, ValidationError

from core.config_parts import check_rules
from core.config_reader import ConfigError, Str, about, check_fernet_keys, config_error, expand, table
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
    RedisSettings,
    RetentionSettings,
    RouteSettings,
    SecuritySettings,
    SpoolSettings,
    TargetSettings,
    UserSettings,
    WebSettings,
    WorkerSettings,
)
from core.redis_url import is_sentinel, parse_sentinel_url

__all__ = [
    "ConfigError", "Settings", "parse_settings", "CalcomSettings", "SecuritySettings",
    "ProviderSettings", "EventTypeSettings", "LocationSettings", "PatientFieldSettings",
    "TargetSettings", "RouteSettings", "DeliverySettings", "WorkerSettings", "UserSettings",
    "ConsoleSettings", "OidcSettings", "SpoolSettings", "RetentionSettings", "InboundSettings",
    "WebSettings", "MllpListenerSettings", "RedisSettings",
]

DEFAULT_CONFIG = "calehr.toml"
NO_CONFIG = ("no config: set CALEHR_CONFIG to your calehr.toml, or run `calehr up` once in this "
             "folder (it writes var/calehr.toml with fresh secrets)")


# from the environment or the caller, never from the file
ENV_ONLY = ("redis_url", "source")
SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


@table
@dataclass(frozen=True)
class Settings:
    """calehr.toml: the Cal.com <-> EHR bridge's settings."""

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
    redis: RedisSettings = field(default_factory=RedisSettings)
    key_prefix: Annotated[Str, about("prefix of the bridge's Redis keys")] = "calehr"
    var_dir: Annotated[Str, about("folder for local state (spool, `calehr up`'s Redis)")] = "var"
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


@functools.cache
def _file_rules() -> TypeAdapter[Settings]:
    return TypeAdapter(Settings)


def parse_settings(raw: dict[str, Any], env: Mapping[str, str], source: str = "") -> Settings:
    for key in ENV_ONLY:
        if key in raw:
            raise ConfigError(f"{key}: unknown key")
    data = {"security": {}, **raw, "redis_url": env.get("REDIS_URL", ""), "source": source}
    try:
        settings = _file_rules().validate_python(data)
    except ValidationError as exc:
        raise config_error(exc) from None  # pydantic's own text shows the values (secrets)

    env_keys = env.get("CALEHR_ENCRYPTION_KEYS", "")
    keys = tuple(k.strip() for k in env_keys.split(",") if k.strip())
    keys += settings.security.encryption_keys
    if not keys:
        raise ConfigError("security.encryption_keys: at least one Fernet key is required "
                          "(or set CALEHR_ENCRYPTION_KEYS)")
    check_fernet_keys(keys)
    check_rules(settings)
    if is_sentinel(settings.redis_url):
        parse_sentinel_url(settings.redis_url)  # a bad Sentinel URL fails at start, naming the part
    spool = settings.spool
    if not spool.path and env.get("CALEHR_SPOOL_PATH"):
        spool = dataclasses.replace(spool, path=env["CALEHR_SPOOL_PATH"])
    return dataclasses.replace(settings, security=SecuritySettings(keys), spool=spool)


def file_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of the config file, for editors and `calehr config schema`."""
    schema = _file_rules().json_schema()
    for key in ENV_ONLY:
        schema["properties"].pop(key)
    # [security] may be left out when CALEHR_ENCRYPTION_KEYS holds the keys
    schema["required"] = [k for k in schema["required"] if k not in (*ENV_ONLY, "security")]
    return {"$schema": SCHEMA_DIALECT, **schema}
