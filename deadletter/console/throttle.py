"""Login throttle per (user name, client address): growing delays, never a lockout from elsewhere.

Each try reserves its place atomically in Redis (one Lua script) before the password is
checked: the first `free_attempts` go at once, then each next try must wait twice as long as
the one before (base delay up to max delay). Parallel tries cannot slip past: a try that finds
the wait running is refused without touching the password. A right password clears the count.
Failures from another address never slow this one, so nobody can lock the admin out.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import redis

from core import clock

# KEYS[1] the pair's hash; ARGV now, free, base, max, forget-after (seconds, as strings)
_RESERVE = """
local now = tonumber(ARGV[1])
local n = tonumber(redis.call('HGET', KEYS[1], 'n') or '0')
local next_at = tonumber(redis.call('HGET', KEYS[1], 'next') or '0')
if now < next_at then
  return {0, tostring(next_at - now)}
end
n = n + 1
local delay = 0
if n >= tonumber(ARGV[2]) then
  delay = math.min(tonumber(ARGV[3]) * 2 ^ (n - tonumber(ARGV[2])), tonumber(ARGV[4]))
end
redis.call('HSET', KEYS[1], 'n', n)
if delay > 0 then  -- never a 'next' of now: a try stamped a moment earlier must still pass
  redis.call('HSET', KEYS[1], 'next', string.format('%.6f', now + delay))
end
redis.call('PEXPIRE', KEYS[1], math.ceil((delay + tonumber(ARGV[5])) * 1000))
return {1, tostring(delay)}
"""


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after: float  # seconds until the next try is allowed (0 = now)

    @property
    def retry_after_header(self) -> str:
        return str(max(1, math.ceil(self.retry_after)))


class LoginThrottle:
    def __init__(self, client: redis.Redis, prefix: str, free_attempts: int = 5,
                 base_delay: float = 1.0, max_delay: float = 900.0) -> None:
        self.r = client
        self.p = f"{prefix}:console:login-throttle"
        self.free_attempts = max(1, free_attempts)
        self.base_delay = base_delay
        self.max_delay = max(base_delay, max_delay)
        self.forget_after = max(900.0, self.max_delay)  # a quiet pair starts over after this
        self._reserve = self.r.register_script(_RESERVE)

    def _key(self, username: str, address: str) -> str:
        pair = f"{username.lower()}\0{address}".encode()
        return f"{self.p}:{hashlib.sha256(pair).hexdigest()[:32]}"

    def attempt(self, username: str, address: str) -> Verdict:
        """Reserve one try for this pair now, or say how long to wait."""
        allowed, wait = self._reserve(keys=[self._key(username, address)], args=[
            repr(clock.now()), self.free_attempts, self.base_delay, self.max_delay,
            self.forget_after])
        return Verdict(bool(int(allowed)), 0.0 if int(allowed) else float(wait))

    def succeeded(self, username: str, address: str) -> None:
        self.r.delete(self._key(username, address))
