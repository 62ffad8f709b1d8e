"""HL7 v2 escape sequences for the default delimiters `|^~\\&`.

Every C0 control character (NUL..US, which includes the MLLP framing bytes VT and FS and the
segment terminator CR) and DEL leave as a hex escape `\\Xhh\\`: no value can end a field,
segment, frame or message. C0 bytes are the same single byte in every charset the bridge
writes (UTF-8, ISO 8859-1/-15, ASCII), so the escape reads back the same in each.
"""

from __future__ import annotations

import re

_ESCAPES = (("\\", "\\E\\"), ("|", "\\F\\"), ("^", "\\S\\"), ("&", "\\T\\"), ("~", "\\R\\"))
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SEQUENCE = re.compile(r"\\(E|F|S|T|R|\.br|X[0-9A-Fa-f]+)\\")


def _hex(match: re.Match[str]) -> str:
    return f"\\X{ord(match.group(0)):02X}\\"


def escape(value: object) -> str:
    """Make one value safe inside a field, component or subcomponent."""
    text = "" if value is None else str(value)
    for raw, seq in _ESCAPES:  # backslash first, or later escapes would be doubled
        text = text.replace(raw, seq)
    return _CONTROL.sub(_hex, text)


def escape_text(value: object) -> str:
    """Like `escape`, for formatted text (NTE-3): line breaks become `\\.br\\`."""
    text = "" if value is None else str(value)
    return "\\.br\\".join(escape(line) for line in _LINE_BREAK.split(text))


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
