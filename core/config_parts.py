"""Rules across fields, run on the validated sections (core/config.py calls `check_rules`).
Each names the key it blames; rules on one value are in core/config_values.py."""

from __future__ import annotations

from typing import Any

from core.config_reader import ConfigError
from core.config_sections import (
    CalcomSettings,
    MllpListenerSettings,
    OidcSettings,
    TargetSettings,
)


def check_rules(s: Any) -> None:
    """`s` is a core.config.Settings (not imported: config.py imports this module)."""
    check_calcom(s.calcom)
    names: list[str] = []
    for i, target in enumerate(s.targets):
        check_target(target, f"targets[{i}]")
        if target.name in names:
            raise ConfigError(f"targets[{i}].name: duplicate target name {target.name!r}")
        names.append(target.name)
    for i, route in enumerate(s.routes):
        for name in route.targets:
            if name not in names:
                raise ConfigError(f"routes[{i}].targets: unknown target {name!r}")
    if s.worker.task_time_limit >= s.worker.visibility_timeout:
        raise ConfigError("worker.task_time_limit: must be below worker.visibility_timeout")
    if s.delivery.countdown_max_seconds * 4 > s.worker.visibility_timeout:
        raise ConfigError("delivery.countdown_max_seconds: must stay well below "
                          "worker.visibility_timeout (at most a quarter)")
    check_mllp(s.mllp)
    if s.users and not s.console.secret_key:
        raise ConfigError("console.secret_key: required when [[users]] are configured")
    check_oidc(s.oidc, has_secret_key=bool(s.console.secret_key))


def check_calcom(calcom: CalcomSettings) -> None:
    if not calcom.blocker_event_type_slug and not calcom.blocker_event_type_id:
        raise ConfigError("calcom.blocker_event_type_slug: required when "
                          "calcom.blocker_event_type_id is not set")


def check_oidc(oidc: OidcSettings, *, has_secret_key: bool) -> None:
    if not oidc.issuer:
        return
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
    if not has_secret_key:
        raise ConfigError("console.secret_key: required when oidc.issuer is set")


def check_target(t: TargetSettings, name: str) -> None:
    check_ack_mode(t, name)
    if t.kind == "mllp" and not (0 < t.port < 65536):
        raise ConfigError(f"{name}.port: an MLLP target needs a port between 1 and 65535")
    if t.kind == "file" and not t.path:
        raise ConfigError(f"{name}.path: a file target needs a folder")
    if t.kind == "fhir" and not t.url:
        raise ConfigError(f"{name}.url: a FHIR target needs a base url")


def check_ack_mode(t: TargetSettings, name: str) -> None:
    if t.ack_mode == "enhanced" and not ({t.accept_ack_type, t.application_ack_type}
                                         & {"AL", "SU"}):
        raise ConfigError(f"{name}.application_ack_type: with accept_ack_type "
                          f"{t.accept_ack_type} the EHR would never confirm a message; "
                          "one of the two must be AL or SU")


def check_mllp(m: MllpListenerSettings) -> None:
    if bool(m.tls_cert_file) != bool(m.tls_key_file):
        raise ConfigError("mllp.tls_cert_file, mllp.tls_key_file: set both or neither")
    if m.tls_client_ca_file and not m.tls_cert_file:
        raise ConfigError("mllp.tls_client_ca_file: needs tls_cert_file and tls_key_file")
