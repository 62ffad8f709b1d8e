"""Encryption of PHI at rest (Fernet / MultiFernet): the first key encrypts, all keys decrypt."""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


class Cipher:
    def __init__(self, keys: tuple[str, ...] | list[str]) -> None:
        if not keys:
            raise ValueError("at least one encryption key is required")
        self._fernet = MultiFernet([Fernet(k) for k in keys])

    def encrypt(self, data: bytes) -> bytes:
        return self._fernet.encrypt(data)

    def decrypt(self, token: bytes) -> bytes:
        try:
            return self._fernet.decrypt(token)
        except InvalidToken as exc:
            raise DecryptError("stored data cannot be decrypted with the configured keys") from exc

    def rotate(self, token: bytes) -> bytes:
        """Re-encrypt under the first (newest) key."""
        return self._fernet.rotate(token)


class DecryptError(Exception):
    pass


def new_key() -> str:
    return Fernet.generate_key().decode()
