"""The config file's rules (core/config_sections.py, config_values.py, config_parts.py): strict
types, unknown keys at every level, `${VAR}`, and every rule across keys, each error naming its key."""

from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from werkzeug.security import generate_password_hash

from core.config import ConfigError, Settings, file_schema, parse_settings
from core.config_reader import expand
from tests.support import config_text

SECRET_KEY = "k" * 32


@pytest.fixture
def raw(tmp_path: Path) -> dict[str, Any]:
    return tomllib.loads(config_text(tmp_path))


def parse(raw: dict[str, Any], env: dict[str, str] | None = None) -> Settings:
    env = env or {}
    return parse_settings(expand(raw, env, ""), env)  # as Settings.from_toml does


def put(raw: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of `raw` with `value` at `path` (`targets[0].port`); missing tables are made."""
    raw = copy.deepcopy(raw)
    parts = re.findall(r"[^.\[\]]+|\[\d+\]", path)
    node: Any = raw
    for part, after in zip(parts, parts[1:], strict=False):
        key: Any = int(part[1:-1]) if part.startswith("[") else part
        if isinstance(key, str) and key not in node:
            node[key] = [] if after.startswith("[") else {}
        node = node[key]
    last = parts[-1]
    node[int(last[1:-1]) if last.startswith("[") else last] = value
    return raw


def error(raw: dict[str, Any], env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as err:
        parse(raw, env)
    return str(err.value)


def a_user(**extra: Any) -> dict[str, Any]:
    return {"username": "ada", "password_hash": generate_password_hash("a long password"),
            "role": "admin", **extra}


def test_unknown_key_at_every_level(raw):
    """Every table the schema has, top level included, refuses a key it does not know."""
    raw = put(raw, "console.secret_key", SECRET_KEY)
    raw["users"] = [a_user()]
    levels = [""]
    for key, prop in file_schema()["properties"].items():
        if "items" in prop:
            levels.append(f"{key}[0]")
            raw.setdefault(key, [{}])
        elif "$ref" in prop:
            levels.append(key)
    assert len(levels) > 15, levels
    parse(raw)  # the base is valid
    for level in levels:
        path = f"{level}.bogus" if level else "bogus"
        assert error(put(raw, path, 1)).splitlines()[0] == f"{path}: unknown key", path
    for env_only in ("redis_url", "source"):  # from the environment, never the file
        assert error(put(raw, env_only, "x")) == f"{env_only}: unknown key"


@pytest.mark.parametrize(("path", "value", "message"), [
    ("worker.concurrency", True, "expected an integer, got a boolean"),
    ("targets[0].port", 6661.0, "expected an integer, got a number"),
    ("calcom.max_body_bytes", "1024", "expected an integer, got a string"),
    ("delivery.retry_base_seconds", "2", "expected a number, got a string"),
    ("delivery.retry_base_seconds", False, "expected a number, got a boolean"),
    ("calcom.api_key", 5, "expected a string, got an integer"),
    ("key_prefix", 1, "expected a string, got an integer"),
    ("targets[0].allow_notes", 1, "expected true or false, got an integer"),
    ("targets[0].allow_notes", "true", "expected true or false, got a string"),
    ("routes[0].targets", ["files", 2], None),  # the item: routes[0].targets[1]
    ("event_types[0].id", "12", "expected an integer, got a string"),
    ("calcom", 5, "expected a table, got an integer"),
    ("targets", {"name": "files"}, "expected an array, got a table"),
])
def test_wrong_types_are_errors_naming_the_key(raw, path, value, message):
    text = error(put(raw, path, value))
    if message is None:
        assert text == "routes[0].targets[1]: expected a string, got an integer"
    else:
        assert text == f"{path}: {message}"


def test_numbers_take_integers_and_lists_take_one_string(raw):
    s = parse(put(put(raw, "delivery.retry_base_seconds", 3), "calcom.webhook_secrets", "only"))
    assert s.delivery.retry_base_seconds == 3.0 and isinstance(s.delivery.retry_base_seconds, float)
    assert s.calcom.webhook_secrets == ("only",)


def test_every_error_is_a_line_and_no_value_is_shown(raw):
    raw = put(put(raw, "calcom.api_key", ["sk-live-secret"]), "worker.concurrency", "sk-two")
    lines = error(put(raw, "targets[0].bogus", "sk-three")).splitlines()
    assert sorted(lines) == ["calcom.api_key: expected a string, got an array",
                             "targets[0].bogus: unknown key",
                             "worker.concurrency: expected an integer, got a string"]


def test_var_expansion_at_any_depth(raw):
    raw = put(raw, "targets[0].path", "${OUTBOX}/siu")
    assert parse(raw, {"OUTBOX": "/srv/out"}).targets[0].path == "/srv/out/siu"
    assert error(raw) == "targets[0].path: environment variable OUTBOX is not set"
    # expansion makes strings only: a number from the environment is still a string
    assert error(put(raw, "worker.concurrency", "${N}"), {"N": "4", "OUTBOX": "/o"}) == (
        "worker.concurrency: expected an integer, got a string")


def test_environment_fills_keys_redis_and_spool(raw):
    from cryptography.fernet import Fernet

    key = Fernet.generate_key().decode()
    del raw["security"]
    s = parse(raw, {"CALEHR_ENCRYPTION_KEYS": f"{key}, ", "REDIS_URL": "redis://h/1",
                    "CALEHR_SPOOL_PATH": "/spool"})
    assert (s.security.encryption_keys, s.redis_url, s.spool.path) == ((key,), "redis://h/1", "/spool")
    assert error(raw).startswith("security.encryption_keys: at least one Fernet key is required")
    assert error(raw, {"CALEHR_ENCRYPTION_KEYS": "nope"}).startswith(
        "security.encryption_keys[0]: not a Fernet key")
    assert parse(put(raw, "spool.path", "/mine"), {"CALEHR_ENCRYPTION_KEYS": key,
                                                   "CALEHR_SPOOL_PATH": "/spool"}).spool.path == "/mine"


def test_urls_lose_their_trailing_slash(raw):
    raw = put(raw, "calcom.api_url", "https://cal.example/v2/")
    raw["targets"].append({"name": "fhir", "kind": "fhir", "url": "https://ehr.example/fhir/"})
    s = parse(raw)
    assert (s.calcom.api_url, s.target("fhir").url) == ("https://cal.example/v2",
                                                        "https://ehr.example/fhir")


RULES = [
    ("calcom.webhook_secrets", [], "at least one non-empty secret is required"),
    ("calcom.webhook_secrets", ["ok", ""], "at least one non-empty secret is required"),
    ("calcom.blocker_event_type_id", -1, "must not be negative"),
    ("calcom.blocker_event_type_slug", "", "required when calcom.blocker_event_type_id"),
    ("calcom.blocker_attendee_email", "nobody", "must be an email address"),
    ("providers[0].strategy", "push", "must be 'ics' or 'api' (got 'push')"),
    ("targets[0].charset", "latin1", "must be 'UNICODE UTF-8', '8859/1' or '8859/15'"),
    ("targets[0].status_case", "lower", "must be 'title' or 'upper'"),
    ("targets[0].auth", "basic", "must be 'none', 'bearer' or 'oauth2'"),
    ("targets[0].path", "", "a file target needs a folder"),
    ("targets[0].file_mode", "0666", "an octal mode like \"0640\" that is not world-writable"),
    ("targets[0].file_mode", "rw", "an octal mode like \"0640\""),
    ("targets[0].file_mode", 416, "an octal mode like \"0640\""),
    ("routes[0].targets", [], "at least one target is required"),
    ("worker.concurrency", -1, "must not be negative"),
    ("retention.event_body_days", -0.5, "must not be negative"),
    ("worker.visibility_timeout", 19, "must stay well below"),  # blamed on countdown_max_seconds
    ("mllp.max_connections", 0, "must be greater than 0"),
    ("mllp.idle_timeout_seconds", -1, "must be greater than 0"),
    ("mllp.allowed_peers", ["10.0.0.0/8", "lan"], "not an IP address or network ('lan')"),
    ("mllp.tls_cert_file", "/c.pem", "set both or neither"),
    ("mllp.tls_client_ca_file", "/ca.pem", "needs tls_cert_file and tls_key_file"),
    ("console.secret_key", "short", "at least 32 characters"),
]


@pytest.mark.parametrize(("path", "value", "message"), RULES, ids=[f"{p}={v!r}" for p, v, _ in RULES])
def test_rules_name_the_key(raw, path, value, message):
    text = error(put(raw, path, value))
    blamed = {"worker.visibility_timeout": "delivery.countdown_max_seconds",
              "mllp.tls_cert_file": "mllp.tls_cert_file, mllp.tls_key_file"}.get(path, path)
    if path.endswith("allowed_peers"):
        blamed += "[1]"
    assert text.startswith(f"{blamed}: ") and message in text, text


@pytest.mark.parametrize(("target", "blamed", "message"), [
    ({"kind": "mllp"}, "port", "an MLLP target needs a port between 1 and 65535"),
    ({"kind": "mllp", "port": 70000}, "port", "an MLLP target needs a port"),
    ({"kind": "fhir"}, "url", "a FHIR target needs a base url"),
    ({"kind": "file", "path": "/x", "name": "files"}, "name", "duplicate target name 'files'"),
    ({"kind": "file"}, "name", "required"),
])
def test_target_rules(raw, target, blamed, message):
    raw["targets"].append({"name": "second", **target} if "name" not in target or target["name"]
                          else target)
    if blamed == "name" and message == "required":
        del raw["targets"][1]["name"]
    text = error(raw)
    assert text.startswith(f"targets[1].{blamed}: ") and message in text, text


def test_user_rules(raw):
    raw = put(raw, "console.secret_key", SECRET_KEY)
    assert parse(put(raw, "users", [a_user()])).users[0].role == "admin"
    assert error(put(raw, "users", [a_user(role="root")])).startswith(
        "users[0].role: must be 'viewer', 'operator' or 'admin'")
    assert error(put(raw, "users", [a_user(password_hash="hunter2")])) == (
        "users[0].password_hash: not a password hash (make one with `calehr hash-password`)")
    assert error(put(put(raw, "users", [a_user()]), "console.secret_key", "")) == (
        "console.secret_key: required when [[users]] are configured")


OIDC = {"issuer": "https://id.example/", "client_id": "bridge", "client_secret": "s",
        "admin_values": ["calehr-admins"]}


@pytest.mark.parametrize(("change", "message"), [
    ({"issuer": "http://id.example"}, "oidc.issuer: must be an https:// URL"),
    ({"client_id": ""}, "oidc.client_id: required when oidc.issuer is set"),
    ({"client_secret": ""}, "oidc.client_secret: required when oidc.issuer is set"),
    ({"scopes": "profile email"}, "oidc.scopes: must include openid"),
    ({"admin_values": []}, "oidc.viewer_values: map at least one role_claim value to a role"),
    ({"secret_key": ""}, "console.secret_key: required when oidc.issuer is set"),
])
def test_oidc_rules(raw, change, message):
    raw = put(raw, "console.secret_key", SECRET_KEY)
    assert parse(put(raw, "oidc", dict(OIDC))).oidc.issuer == "https://id.example"
    change = dict(change)
    raw = put(raw, "console.secret_key", change.pop("secret_key", SECRET_KEY))
    assert error(put(raw, "oidc", {**OIDC, **change})).startswith(message)
