"""HL7 v2 escape sequences for the default delimiters `|^~\\&`."""

from __future__ import annotations

import re

_ESCAPES = (("\\", "\\E\\"), ("|", "\\F\\"), ("^", "\\S\\"), ("&", "\\T\\"), ("~", "\\R\\"))
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_SEQUENCE = re.compile(r"\\(E|F|S|T|R|\.br|X[0-9A-Fa-f]+)\\")


def escape(value: object) -> str:
    """Make one value safe inside a field, component or subcomponent."""
    text = "" if value is None else str(value)
    for raw, seq in _ESCAPES:  # backslash first, or later escapes would be doubled
        text = text.replace(raw, seq)
    return _LINE_BREAK.sub(r"\\.br\\", text)


def unescape(value: str, charset: str = "latin-1") -> str:
    def one(match: re.Match[str]) -> str:
        code = match.group(1)
        if code == ".br":
            return "\n"
        if code[0] == "X":
            try:
                return bytes.fromhex(code[1:]).decode(charset)
            except ValueError:
                return match.group(0)
        return {"E": "\\", "F": "|", "S": "^", "T": "&", "R": "~"}[code]

    return _SEQUENCE.sub(one, value)


def components(value: str) -> str:
    """A configured value already in component form (`Okafor^Amina^^^Dr.`): escape each part."""
    return "^".join(escape(part) for part in value.split("^"))
