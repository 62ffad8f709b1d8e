"""Acknowledged writes survive a failover: wait until a replica holds them (Redis WAIT).

Replication is asynchronous: a write the master took but had not yet passed on is gone when
Sentinel promotes a replica. Before the bridge acknowledges something (202 to Cal.com, an MLLP
ACK, a delivery recorded as done, a drain lock taken), `confirm` blocks until
`[redis] replicas_to_confirm` replicas have everything written so far, or raises
NotReplicated after `replica_wait_ms`. NotReplicated is a RedisError, so each caller falls
back as for "Redis down" (spool, AR 207, retry) without new code paths.

WAIT counts the writes of the connection it runs on. Our callers' writes may have used another
connection of the pool, so `confirm` first writes one small key on the WAIT's own connection:
the master's replication stream is one ordered log, so a replica that has this write has every
write that was answered before it.
"""

from __future__ import annotations

import redis

from core.config_sections import RedisSettings


class NotReplicated(redis.RedisError):
    """Fewer replicas than configured confirmed the write in time."""

    def __init__(self, wanted: int, got: int, wait_ms: int) -> None:
        super().__init__(f"{got} of {wanted} replica(s) confirmed the write within {wait_ms} ms")
        self.wanted, self.got = wanted, got


def confirm(client: redis.Redis, settings: RedisSettings, prefix: str = "calehr") -> None:
    """Return once enough replicas hold every write answered so far; off when 0 are wanted."""
    wanted = settings.replicas_to_confirm
    if wanted <= 0:
        return
    pipe = client.pipeline(transaction=False)  # one connection for the mark and the WAIT
    pipe.incr(f"{prefix}:replication-mark")
    pipe.execute_command("WAIT", wanted, settings.replica_wait_ms)
    _, got = pipe.execute()
    if int(got) < wanted:
        raise NotReplicated(wanted, int(got), settings.replica_wait_ms)
