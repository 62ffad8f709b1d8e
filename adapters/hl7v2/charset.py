"""MSH-18 character sets (HL7 table 0211) and the Python codecs for them."""

from __future__ import annotations

CODECS = {
    "UNICODE UTF-8": "utf-8",
    "UTF-8": "utf-8",  # not a table 0211 code, but real senders use it
    "8859/1": "latin-1",
    "8859/15": "iso8859-15",
    "ASCII": "ascii",
    "": "utf-8",
}


def codec_for(msh18: str) -> str:
    return CODECS.get(msh18.strip().upper(), "utf-8")


def sniff_msh18(raw: bytes) -> str:
    """MSH-18 of a raw message, read before decoding (MSH is plain ASCII)."""
    first = raw.split(b"\r", 1)[0].split(b"\n", 1)[0]
    if not first.startswith(b"MSH") or len(first) < 4:
        return ""
    fields = first.split(first[3:4])
    return fields[17].decode("ascii", "replace") if len(fields) > 17 else ""


def decode_message(raw: bytes) -> str:
    codec = codec_for(sniff_msh18(raw))
    try:
        return raw.decode(codec)
    except UnicodeDecodeError:
        return raw.decode("latin-1")
