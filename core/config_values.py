"""Rules for one config value at a time (the section dataclasses attach them to their fields;
pydantic reports a failure under the field's key path). Rules across fields: core/config_parts.py."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BeforeValidator, Field, Strict

from core.config_reader import Str, Strings, each_string

MIN_SECRET_KEY_CHARS = 32


def _time_zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc
    return name


def _file_mode(text: Any) -> int:
    mode = -1
    if isinstance(text, str):
        try:
            mode = int(text, 8)
        except ValueError:
            mode = -1
    if not 0 <= mode <= 0o777 or mode & 0o002:
        got = repr(text) if isinstance(text, str) else type(text).__name__
        raise ValueError(f"an octal mode like \"0640\" that is not world-writable (got {got})")
    return mode


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


def _password_hash(pw: str) -> str:
    if not pw.startswith(("scrypt:", "pbkdf2:")):
        raise ValueError("not a password hash (make one with `calehr hash-password`)")
    if not strong_hash(pw):
        raise ValueError("weaker than the current default (scrypt N>=32768 r>=8, or pbkdf2 "
                         "sha256/sha512 with >=1000000 iterations); make a new one with "
                         "`calehr hash-password`")
    return pw


def _secret_key(key: str) -> str:
    if key and len(key) < MIN_SECRET_KEY_CHARS:
        raise ValueError(f"at least {MIN_SECRET_KEY_CHARS} characters (make one with `python3 -c "
                         "'import secrets; print(secrets.token_urlsafe(32))'`)")
    return key


def _email(address: str) -> str:
    if "@" not in address:
        raise ValueError("must be an email address")
    return address


def _ip_network(peer: str) -> str:
    try:
        ipaddress.ip_network(peer, strict=False)
    except ValueError as exc:
        raise ValueError(f"not an IP address or network ({peer!r})") from exc
    return peer


def _webhook_secrets(secrets: tuple[str, ...]) -> tuple[str, ...]:
    if not secrets or any(not s for s in secrets):
        raise ValueError("at least one non-empty secret is required")
    return secrets


def _route_targets(targets: tuple[str, ...]) -> tuple[str, ...]:
    if not targets:
        raise ValueError("at least one target is required")
    return targets


TimeZone = Annotated[Str, AfterValidator(_time_zone)]
# TOML string "0640" -> 0o640; the runtime value is the int
FileMode = Annotated[int, BeforeValidator(_file_mode, json_schema_input_type=str), Strict()]
PasswordHash = Annotated[Str, AfterValidator(_password_hash)]
SecretKey = Annotated[Str, AfterValidator(_secret_key)]
Email = Annotated[Str, AfterValidator(_email)]
IpNetworks = each_string(_ip_network)
WebhookSecrets = Annotated[Strings, AfterValidator(_webhook_secrets),
                           Field(json_schema_extra={"minItems": 1})]
RouteTargets = Annotated[Strings, AfterValidator(_route_targets),
                         Field(json_schema_extra={"minItems": 1})]
