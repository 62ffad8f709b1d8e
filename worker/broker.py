"""kombu's Redis transport with one fix: a worker no longer exits when Redis restarts.

When the broker connection drops, Celery closes the kombu Connection, which sets its transport's
`client` (the broker URL and credentials) to None. Closing the channel afterwards restores the
worker's unacknowledged messages, and that needs a fresh Redis pool built from `client`:
`AttributeError: 'NoneType' object has no attribute 'hostname'` in `Channel._connparams`, which
Celery treats as unrecoverable (kombu issues #582 and #970 show the same path; seen here with
celery 5.7 / kombu 5.7 in about one Redis restart in five under load). The channel below keeps
the connection details it was opened with and uses them when its transport has let go of them.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from kombu.transport import redis as kombu_redis


class _KeepsConnectionInfo:
    connection: Any

    def __init__(self, connection: Any, *args: Any, **kwargs: Any) -> None:
        self._connection_info = connection.client  # the kombu Connection: URL, credentials, ssl
        super().__init__(connection, *args, **kwargs)

    def _connparams(self, asynchronous: bool = False) -> dict:
        transport = self.connection
        if transport.client is not None:
            return super()._connparams(asynchronous=asynchronous)  # type: ignore[misc]
        transport.client = self._connection_info  # only while the parameters are read
        try:
            return super()._connparams(asynchronous=asynchronous)  # type: ignore[misc]
        finally:
            transport.client = None


class Channel(_KeepsConnectionInfo, kombu_redis.Channel):
    pass


class Transport(kombu_redis.Transport):
    Channel = Channel


class SentinelChannel(_KeepsConnectionInfo, kombu_redis.SentinelChannel):
    def _sentinel_managed_pool(self, asynchronous: bool = False) -> Any:
        transport = self.connection  # reads `client.alt` (the sentinels) outside _connparams
        if transport.client is not None:
            return super()._sentinel_managed_pool(asynchronous)
        transport.client = self._connection_info
        try:
            return super()._sentinel_managed_pool(asynchronous)
        finally:
            transport.client = None


class SentinelTransport(kombu_redis.SentinelTransport):
    Channel = SentinelChannel


def transport_for(broker_url: str) -> str | None:
    """The transport class for a broker URL (None: kombu's own, for schemes we do not patch)."""
    scheme = urlparse(broker_url).scheme
    return {"redis": "worker.broker:Transport",
            "sentinel": "worker.broker:SentinelTransport"}.get(scheme)
