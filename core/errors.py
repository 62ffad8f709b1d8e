"""Error classes. Messages carry ids and codes only, never patient data."""


class BridgeError(Exception):
    """Base class for errors the bridge raises on purpose."""


class PayloadError(BridgeError):
    """A webhook body cannot be used. `status` is the HTTP code to answer with."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


class MappingError(BridgeError):
    """An event cannot be turned into a wire message (unknown provider, bad charset...).

    Permanent: retrying will not help; it goes to the dead-letter store at stage `mapping`.
    """


class TransientError(BridgeError):
    """Worth retrying later (connection refused, timeout, 5xx...)."""


class PermanentError(BridgeError):
    """Retrying will not help."""
