"""Reading the config file strictly: `${VAR}` expansion, the field types the sections use, and
pydantic's validation errors turned into one ConfigError naming each key (core/config.py)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    StrictStr,
    ValidationError,
    with_config,
)
from pydantic.fields import FieldInfo

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


# Every table refuses keys it does not know (applied to each section dataclass).
table = with_config(ConfigDict(extra="forbid"))


def about(text: str, **constraints: Any) -> FieldInfo:
    """A key's description: the JSON Schema and the README table show it."""
    return Field(description=text, **constraints)


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


# Per-field strict types, not pydantic's global strict mode: nested tables still validate from
# TOML's dicts into the section dataclasses, while a bool is never an int and a string never a number.
Str = StrictStr
Bool = StrictBool
Int = Annotated[int, Strict()]
Num = Annotated[float, Strict()]  # an integer or a float, stored as float
NonNegInt = Annotated[int, Strict(), Field(ge=0)]
NonNegNum = Annotated[float, Strict(), Field(ge=0)]
PosInt = Annotated[int, Strict(), Field(gt=0)]
PosNum = Annotated[float, Strict(), Field(gt=0)]
# a list of strings; one string is a list of one
Strings = Annotated[tuple[StrictStr, ...],
                    BeforeValidator(_one_or_many, json_schema_input_type=str | list[str])]


def each_string(check: Any) -> Any:
    """Strings whose every item passes `check` (a ValueError names the item)."""
    return Annotated[tuple[Annotated[StrictStr, AfterValidator(check)], ...],
                     BeforeValidator(_one_or_many, json_schema_input_type=str | list[str])]


def rstrip_slash(url: str) -> str:
    return url.rstrip("/")


Url = Annotated[StrictStr, AfterValidator(rstrip_slash)]

_TYPE_WORDS = {
    "int_type": "an integer", "float_type": "a number", "string_type": "a string",
    "bool_type": "true or false", "tuple_type": "an array", "list_type": "an array",
    "dataclass_type": "a table", "dataclass_args_type": "a table", "dict_type": "a table",
}
_TOML_WORDS = {bool: "a boolean", str: "a string", int: "an integer", float: "a number",
               list: "an array", tuple: "an array", dict: "a table"}


def key_path(loc: tuple[Any, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "config"


def _message(error: Any) -> str:
    kind = error["type"]
    if kind == "missing":
        return "required"
    if kind in ("unexpected_keyword_argument", "extra_forbidden"):
        return "unknown key"
    if kind in _TYPE_WORDS:  # never the value itself: it may be a secret
        got = _TOML_WORDS.get(type(error["input"]), type(error["input"]).__name__)
        return f"expected {_TYPE_WORDS[kind]}, got {got}"
    if kind == "value_error":
        return str(error["ctx"]["error"])
    if kind == "greater_than_equal" and error["ctx"]["ge"] == 0:
        return "must not be negative"
    text = str(error["msg"]).replace("Input should be", "must be")
    if kind == "literal_error":  # a choice, never a secret
        text += f" (got {error['input']!r})"
    return text


def config_error(exc: ValidationError) -> ConfigError:
    """One line per error, each starting with the key path (`targets[0].port: ...`)."""
    lines = [f"{key_path(e['loc'])}: {_message(e)}" for e in exc.errors()]
    return ConfigError("\n".join(dict.fromkeys(lines)))


def check_fernet_keys(keys: tuple[str, ...]) -> None:
    from cryptography.fernet import Fernet

    for i, key in enumerate(keys):
        try:
            Fernet(key)
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                f"security.encryption_keys[{i}]: not a Fernet key (32 url-safe base64 bytes)"
            ) from exc
