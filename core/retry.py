"""Retry policy (exponential backoff with full jitter) and a per-target circuit breaker."""

from __future__ import annotations

import random
from dataclasses import dataclass

import redis

from core import clock
from core.config import DeliverySettings
from core.redis_client import queue_script


def backoff_seconds(attempt: int, policy: DeliverySettings, retry_after: float | None = None,
                    rng: random.Random | None = None) -> float:
    """Delay before attempt `attempt + 1`. Retry-After from the EHR wins when it is longer."""
    rng = rng or random
    ceiling = min(policy.retry_max_backoff_seconds,
                  policy.retry_base_seconds * (2 ** max(0, attempt - 1)))
    delay = ceiling / 2 + rng.uniform(0, ceiling / 2)  # jitter, but never near zero
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


@dataclass(frozen=True)
class CircuitState:
    state: str  # closed | open | half-open
    failures: int
    open_until: float


# KEYS: circuit hash, probe key. Returns 1 when this closed an open circuit.
_SUCCESS = """
local state = redis.call('HMGET', KEYS[1], 'open_until', 'failures')
local open_until, failures = state[1], state[2]
if (failures == false or failures == '0') and (open_until == false or open_until == '0') then
  return 0
end
redis.call('HSET', KEYS[1], 'failures', 0, 'open_until', 0, 'open_seconds', 0)
redis.call('DEL', KEYS[2])
if open_until == false or open_until == '0' then return 0 end
return 1
"""


class CircuitBreaker:
    """Opens after N transient failures in a row; one probe at a time once the wait is over."""

    def __init__(self, client: redis.Redis, policy: DeliverySettings, prefix: str = "calehr") -> None:
        self.r = client
        self.policy = policy
        self.p = f"{prefix}:circuit"
        self._success = client.register_script(_SUCCESS)

    def _key(self, target: str) -> str:
        return f"{self.p}:{target}"

    def state(self, target: str) -> CircuitState:
        return self.state_from(self.r.hgetall(self._key(target)))

    def queue_state(self, pipe: redis.client.Pipeline, target: str) -> None:
        """One answer for `state_from`."""
        pipe.hgetall(self._key(target))

    @staticmethod
    def state_from(data: dict[bytes, bytes]) -> CircuitState:
        failures = int(data.get(b"failures", 0))
        open_until = float(data.get(b"open_until", 0))
        if open_until == 0:
            return CircuitState("closed", failures, 0.0)
        if clock.now() < open_until:
            return CircuitState("open", failures, open_until)
        return CircuitState("half-open", failures, open_until)

    def allow(self, target: str, holder: str) -> tuple[bool, float]:
        """May `holder` send to `target` now? Returns (allowed, retry_at)."""
        st = self.state(target)
        if st.state == "closed":
            return True, 0.0
        if st.state == "open":
            return False, st.open_until
        # half-open: a single probe; others wait a little
        probe = f"{self._key(target)}:probe"
        if self.r.set(probe, holder, nx=True, ex=max(5, int(self.policy.lock_ttl_seconds))):
            return True, 0.0
        return self.r.get(probe) == holder.encode(), clock.now() + 1.0

    def queue_success(self, pipe: redis.client.Pipeline, target: str) -> None:
        """A delivery went through, in the caller's pipeline: its answer is 1 when this closed
        an open circuit."""
        key = self._key(target)
        queue_script(pipe, self._success, [key, f"{key}:probe"], [])

    def failure(self, target: str) -> CircuitState:
        key = self._key(target)
        failures = int(self.r.hincrby(key, "failures", 1))
        if failures >= self.policy.circuit_failure_threshold:
            previous = float(self.r.hget(key, "open_seconds") or 0)
            seconds = min(self.policy.circuit_max_open_seconds,
                          previous * 2 if previous else self.policy.circuit_open_seconds)
            until = clock.now() + seconds
            pipe = self.r.pipeline()
            pipe.hset(key, mapping={"open_until": repr(until), "open_seconds": repr(seconds)})
            pipe.delete(f"{key}:probe")
            pipe.execute()
            return CircuitState("open", failures, until)
        return CircuitState("closed", failures, 0.0)
