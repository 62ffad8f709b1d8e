"""PHI redaction for logs, error texts and Sentry events.

The bridge's own messages carry ids and codes only; these helpers are the second line of
defence for text that comes from outside (exception strings, ERR segments, HTTP bodies).
"""

from __future__ import annotations

import re
from typing import Any

MASK = "[redacted]"

PHI_KEYS = frozenset({
    "name", "firstname", "lastname", "first_name", "last_name", "email", "attendeeemail",
    "phone", "phonenumber", "attendeephonenumber", "smsremindernumber", "dateofbirth", "dob",
    "birthdate", "responses", "userfieldsresponses", "attendees", "attendee", "organizer",
    "notes", "additionalnotes", "description", "title", "location", "body", "message",
    "wire", "raw", "patient", "address", "cancellationreason", "rejectionreason",
    "insurancememberid", "reasonforvisit", "rescheduledby", "cancelledby", "user",
})

_PATTERNS = [
    re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"),  # email
    # phone-like digit runs, but not inside ids (uuids, hex) or durations such as 0.0123s
    re.compile(r"(?<![\w.:-])\+?\d[\d\s().-]{7,}\d(?![\w.-])"),
    re.compile(r"\b(19|20)\d{2}-?\d{2}-?\d{2}\b"),  # dates
    re.compile(r"(?m)^(PID|NK1|GT1|IN1|NTE)\|.*$"),  # HL7 segments with patient data
]


_IPV4 = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")


def _mask(match: re.Match[str]) -> str:
    return match.group(0) if _IPV4.match(match.group(0)) else MASK


def redact_text(text: str) -> str:
    for pattern in _PATTERNS:
        text = pattern.sub(_mask, text)
    return text


def scrub(value: Any, depth: int = 0) -> Any:
    """Return a copy with PHI-bearing keys masked and free text redacted."""
    if depth > 12:
        return MASK
    if isinstance(value, dict):
        return {
            k: (MASK if isinstance(k, str) and _norm(k) in PHI_KEYS else scrub(v, depth + 1))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [scrub(v, depth + 1) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, bytes):
        return MASK
    return value


def _norm(key: str) -> str:
    return key.replace("-", "").replace("_", "").lower() if key not in PHI_KEYS else key


def error_text(exc: BaseException) -> str:
    """Class name plus redacted message, for dead letters and logs."""
    return f"{exc.__class__.__name__}: {redact_text(str(exc))[:500]}"
