"""Cal.com webhook signatures: lowercase hex HMAC-SHA256 of the raw body."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable


def sign(body: bytes, secret: str) -> str:
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify(body: bytes, header: str | None, secrets: Iterable[str]) -> bool:
    """True when the header matches any configured secret (several = rotation)."""
    if not header or header == "no-secret-provided":
        return False
    given = header.strip().lower().encode("utf-8", "replace")  # bytes: any header compares
    matched = False
    for secret in secrets:
        # compare against every secret so timing does not reveal which one matched
        matched |= hmac.compare_digest(sign(body, secret).encode(), given)
    return matched
