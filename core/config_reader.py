"""Reading the TOML tables strictly: `${VAR}` expansion, typed getters, unknown keys refused.
Every error is a ConfigError that names the key (core/config.py builds Settings with these)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ConfigError(ValueError):
    """A config value is missing or wrong; the message names the key."""


def expand(value: Any, env: Mapping[str, str], key: str) -> Any:
    if isinstance(value, str):

        def repl(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in env:
                raise ConfigError(f"{key}: environment variable {name} is not set")
            return env[name]

        return _VAR.sub(repl, value)
    if isinstance(value, list):
        return [expand(v, env, f"{key}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: expand(v, env, f"{key}.{k}" if key else k) for k, v in value.items()}
    return value


class Section:
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


def table_list(raw: dict[str, Any], key: str) -> list[Section]:
    value = raw.get(key, [])
    if not isinstance(value, list):
        raise ConfigError(f"{key}: must be an array of tables ([[{key}]])")
    return [Section(item, f"{key}[{i}]") for i, item in enumerate(value)]


def dataclass_section(raw: dict[str, Any], name: str, cls: type) -> Any:
    s = Section(raw.get(name, {}), name)
    values = {}
    for f in cls.__dataclass_fields__.values():
        kind = {"int": int, "float": float, "str": str, "bool": bool}[str(f.type)]
        values[f.name] = s.get(f.name, kind, f.default)
    s.done()
    for key, value in values.items():
        if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
            raise ConfigError(f"{name}.{key}: must not be negative")
    return cls(**values)


def check_fernet_keys(keys: tuple[str, ...]) -> None:
    from cryptography.fernet import Fernet

    for i, key in enumerate(keys):
        try:
            Fernet(key)
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                f"security.encryption_keys[{i}]: not a Fernet key (32 url-safe base64 bytes)"
            ) from exc
