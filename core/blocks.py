"""Busy blocks: time the EHR booked for a provider, kept in Redis for the ICS feed.

A block holds no patient data: an opaque UID (a hash of the EHR's appointment key), the
provider's EHR id, start and end in UTC, a sequence that goes up on each move, and where it
came from (`hl7` or `fhir`). Nothing else is stored.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime

import redis

from core import clock

BLOCK = "block"
MOVE = "move"
RELEASE = "release"
NONE = "none"
KEEP_AFTER_END_SECONDS = 30 * 86400  # ended blocks are purged this long after their end

# KEYS: blocks hash, ends zset, version counter, providers-of-uid set
# ARGV: uid, start, end, end score, origin, now, provider
# Returns {changed (0/1), previous json or ''}
_UPSERT = """
local prev = redis.call('HGET', KEYS[1], ARGV[1])
local seq = 0
if prev then
  local p = cjson.decode(prev)
  if p['start'] == ARGV[2] and p['end'] == ARGV[3] then return {0, prev} end
  seq = (tonumber(p['sequence']) or 0) + 1
end
local rec = cjson.encode({uid=ARGV[1], start=ARGV[2], ['end']=ARGV[3], sequence=seq,
                          origin=ARGV[5], updated_at=tonumber(ARGV[6])})
redis.call('HSET', KEYS[1], ARGV[1], rec)
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
redis.call('INCR', KEYS[3])
redis.call('SADD', KEYS[4], ARGV[7])
return {1, prev or ''}
"""


@dataclass(frozen=True)
class BlockChange:
    """What an inbound EHR message asks for. `external_key` never leaves this object unhashed."""

    action: str  # block | move | release | none
    external_key: tuple[str, str]  # (sending facility or system, appointment id)
    providers: tuple[str, ...] = ()  # EHR ids of configured providers
    start: datetime | None = None  # UTC
    end: datetime | None = None  # UTC
    origin: str = ""  # hl7:S12, fhir:Appointment ... (a code, no patient data)

    @property
    def uid(self) -> str:
        return block_uid(*self.external_key)


@dataclass(frozen=True)
class Block:
    provider: str
    uid: str
    start: datetime
    end: datetime
    sequence: int
    origin: str
    updated_at: float


def block_uid(facility: str, appointment_id: str) -> str:
    """A stable, opaque iCalendar UID for one EHR appointment."""
    digest = hashlib.sha256(f"{facility}\x1f{appointment_id}".encode()).hexdigest()[:32]
    return f"{digest}@calehr"


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _decode(provider: str, raw: bytes | str) -> Block:
    data = json.loads(raw)
    return Block(provider=provider, uid=data["uid"],
                 start=datetime.fromisoformat(data["start"].replace("Z", "+00:00")),
                 end=datetime.fromisoformat(data["end"].replace("Z", "+00:00")),
                 sequence=int(data.get("sequence", 0)), origin=data.get("origin", ""),
                 updated_at=float(data.get("updated_at", 0)))


class BusyBlockStore:
    def __init__(self, client: redis.Redis, prefix: str = "calehr") -> None:
        self.r = client
        self.p = prefix
        self._upsert = client.register_script(_UPSERT)

    # keys ---------------------------------------------------------------------------------
    def _hash(self, provider: str) -> str:
        return f"{self.p}:blocks:{provider}"

    def ends_key(self, provider: str) -> str:
        """The zset of a provider's block uids scored by end time."""
        return f"{self.p}:blocks:{provider}:ends"

    def _version(self, provider: str) -> str:
        return f"{self.p}:blocks:{provider}:version"

    def _owners(self, uid: str) -> str:
        return f"{self.p}:block-providers:{uid}"

    # writes -------------------------------------------------------------------------------
    def upsert(self, provider: str, uid: str, start: datetime, end: datetime,
               origin: str) -> tuple[bool, Block | None]:
        """Add or move a block. Returns (changed, the block as it was before)."""
        changed, prev = self._upsert(
            keys=[self._hash(provider), self.ends_key(provider), self._version(provider),
                  self._owners(uid)],
            args=[uid, _iso(start), _iso(end), end.timestamp(), origin, clock.now(), provider])
        self._purge_ended(provider)
        return bool(changed), (_decode(provider, prev) if prev else None)

    def release(self, uid: str, providers: set[str] | None = None) -> list[Block]:
        """Remove a block from every provider that holds it (or only from `providers`)."""
        owners = {o.decode() for o in self.r.smembers(self._owners(uid))}
        removed = []
        for provider in sorted(owners if providers is None else owners & providers):
            raw = self.r.hget(self._hash(provider), uid)
            pipe = self.r.pipeline(transaction=True)
            pipe.hdel(self._hash(provider), uid)
            pipe.zrem(self.ends_key(provider), uid)
            pipe.srem(self._owners(uid), provider)
            pipe.incr(self._version(provider))
            pipe.execute()
            if raw:
                removed.append(_decode(provider, raw))
        return removed

    def _purge_ended(self, provider: str) -> None:
        cutoff = clock.now() - KEEP_AFTER_END_SECONDS
        old = self.r.zrangebyscore(self.ends_key(provider), "-inf", cutoff, start=0, num=500)
        for uid in old:
            self.release(uid.decode(), {provider})

    # reads --------------------------------------------------------------------------------
    def owners(self, uid: str) -> set[str]:
        return {o.decode() for o in self.r.smembers(self._owners(uid))}

    def get(self, provider: str, uid: str) -> Block | None:
        raw = self.r.hget(self._hash(provider), uid)
        return _decode(provider, raw) if raw else None

    def get_many(self, provider: str, uids: list[bytes]) -> list[Block]:
        return [_decode(provider, raw) for raw in self.r.hmget(self._hash(provider), uids) if raw]

    def list(self, provider: str, ending_after: float | None = None) -> list[Block]:
        """Blocks of one provider, by start time; only those ending after `ending_after`."""
        uids = self.r.zrangebyscore(self.ends_key(provider),
                                    "-inf" if ending_after is None else ending_after, "+inf")
        if not uids:
            return []
        raws = self.r.hmget(self._hash(provider), uids)
        blocks = [_decode(provider, raw) for raw in raws if raw]
        return sorted(blocks, key=lambda b: (b.start, b.uid))

    def version(self, provider: str) -> int:
        return int(self.r.get(self._version(provider)) or 0)
