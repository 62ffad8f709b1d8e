"""Queues waiting on a target's circuit, and a bounded, self-paced way to wake them.

A drain that finds its target's circuit open puts its queue (appointment key) in the target's
`circuit-waiters` zset, scored by when it joined, and stops: no due entry, no re-kick, so an
outage costs nothing per queue while it lasts. Once the circuit is closed, queues are *claimed*
from it: moved atomically to the target's `circuit-waking` zset (scored by the claim time) and
kicked. A drain that ends releases its lock and leaves `circuit-waking` in one script, which also
claims the next waiter while the circuit is closed: each finished queue hands over to the next,
so about `in_flight` queues are woken at a time however long the list is (the broker never holds
the whole backlog). The beat sweep tops that up to `in_flight`, kicks a probe while the circuit
is half-open, and re-kicks claims that no drain finished (a worker died between claim and kick).
"""

from __future__ import annotations

import redis

from core.redis_client import queue_script

# KEYS: waiters, waking, circuit hash. ARGV: now, n. Claims up to n waiters if the circuit is
# closed (or always, with ARGV[3] = "any": the half-open probe). Returns the claimed keys.
_CLAIM = """
if ARGV[3] ~= 'any' then
  local open_until = redis.call('HGET', KEYS[3], 'open_until')
  if open_until and open_until ~= '0' then return {} end
end
local popped = redis.call('ZPOPMIN', KEYS[1], tonumber(ARGV[2]))
local claimed = {}
for i = 1, #popped, 2 do
  redis.call('ZADD', KEYS[2], ARGV[1], popped[i])
  claimed[#claimed + 1] = popped[i]
end
return claimed
"""

# A drain is over: release its lock (if still ours), leave `circuit-waking`, and claim the next
# waiter while the circuit is closed. KEYS: lock, waiters, waking, circuit hash. ARGV: token,
# appointment key, now. Returns the claimed key or false.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
if redis.call('ZREM', KEYS[3], ARGV[2]) == 0 then return false end
local open_until = redis.call('HGET', KEYS[4], 'open_until')
if open_until and open_until ~= '0' then return false end
local popped = redis.call('ZPOPMIN', KEYS[2], 1)
if #popped == 0 then return false end
redis.call('ZADD', KEYS[3], ARGV[3], popped[1])
return popped[1]
"""


class CircuitWaiters:
    def __init__(self, client: redis.Redis, prefix: str = "calehr") -> None:
        self.r = client
        self.p = prefix
        self._claim = client.register_script(_CLAIM)
        self._release = client.register_script(_RELEASE)

    def waiters(self, target: str) -> str:
        return f"{self.p}:circuit-waiters:{target}"

    def waking(self, target: str) -> str:
        return f"{self.p}:circuit-waking:{target}"

    def circuit(self, target: str) -> str:
        return f"{self.p}:circuit:{target}"  # core/retry.py CircuitBreaker's hash

    def join(self, key: str, target: str, now: float) -> None:
        """The queue waits for the circuit (joining twice keeps its first place)."""
        self.r.zadd(self.waiters(target), {key: now}, nx=True)

    def claim(self, target: str, n: int, now: float, *, probe: bool = False) -> list[str]:
        """Up to n waiting queues, moved to `circuit-waking`: kick each one. Nothing while the
        circuit is not closed, unless `probe` (half-open: one queue to try the EHR)."""
        if n <= 0:
            return []
        claimed = self._claim(keys=[self.waiters(target), self.waking(target), self.circuit(target)],
                              args=[repr(now), n, "any" if probe else "closed"])
        return [c.decode() for c in claimed or []]

    def release(self, lock: str, token: str, key: str, target: str, now: float) -> str | None:
        """Release a drain's lock; returns the next waiter claimed for a kick, if any."""
        nxt = self._release(keys=[lock, self.waiters(target), self.waking(target),
                                  self.circuit(target)], args=[token, key, repr(now)])
        return nxt.decode() if nxt else None

    def queue_release(self, pipe: redis.client.Pipeline, lock: str, token: str, key: str,
                      target: str, now: float) -> None:
        """`release` in the caller's pipeline: its answer is the claimed key (bytes) or None."""
        queue_script(pipe, self._release, [lock, self.waiters(target), self.waking(target),
                                           self.circuit(target)], [token, key, repr(now)])

    def stale_claims(self, target: str, older_than: float, limit: int, now: float) -> list[str]:
        """Claims no drain finished by `older_than` (kick lost, worker died): claimed again now."""
        keys = [k.decode() for k in self.r.zrangebyscore(self.waking(target), 0, older_than,
                                                         start=0, num=limit)]
        if keys:
            self.r.zadd(self.waking(target), dict.fromkeys(keys, now), xx=True)
        return keys

    def counts(self, target: str) -> tuple[int, int]:
        """(waiting, woken and not finished)."""
        pipe = self.r.pipeline(transaction=False)
        pipe.zcard(self.waiters(target))
        pipe.zcard(self.waking(target))
        waiting, waking = pipe.execute()
        return int(waiting), int(waking)
