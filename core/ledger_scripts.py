"""The ledger's Lua scripts: each runs atomically in Redis (core/ledger.py calls them)."""

# KEYS: delivery hash. ARGV: now. Returns the attempt number.
START_ATTEMPT = """
local n = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
if n == 1 or tonumber(redis.call('HGET', KEYS[1], 'first_attempt_at') or '0') == 0 then
  redis.call('HSET', KEYS[1], 'first_attempt_at', ARGV[1], 'state', 'sending', 'updated_at', ARGV[1])
else
  redis.call('HSET', KEYS[1], 'state', 'sending', 'updated_at', ARGV[1])
end
return n
"""

# Wake the events parked on some uids: each goes back into the unprocessed set (the sweep
# re-sends what stays there) and its order-wait deadline is dropped. KEYS: unprocessed zset,
# due zset, parked-uids set, then one waiting-uid set per uid. ARGV: now, then the uids.
WAKE = """
local woken = {}
for i = 4, #KEYS do
  local waiting = redis.call('SMEMBERS', KEYS[i])
  if #waiting > 0 then
    for _, id in ipairs(waiting) do
      redis.call('ZADD', KEYS[1], ARGV[1], id)
      redis.call('ZREM', KEYS[2], 'wait:' .. id)
      woken[#woken + 1] = id
    end
    redis.call('DEL', KEYS[i])
  end
  redis.call('SREM', KEYS[3], ARGV[i - 2])
end
return woken
"""

# One delivery of an event is final. KEYS: event hash, dead-letter index of the delivery,
# the set of dead letters to resolve. ARGV: now, "resolve" when the delivery went through.
# Returns {the event's open deliveries left, the delivery's dead-letter id or false}.
PROGRESS = """
local left = redis.call('HINCRBY', KEYS[1], 'open_deliveries', -1)
if left <= 0 then redis.call('HSET', KEYS[1], 'state', 'done', 'reason', '', 'updated_at', ARGV[1]) end
local dl = false
if ARGV[2] == 'resolve' then
  dl = redis.call('GET', KEYS[2])
  if dl then redis.call('SADD', KEYS[3], dl) end
end
return {left, dl}
"""

# Put a dead or skipped delivery back in its queue, once. KEYS: delivery hash, event hash,
# pending zset, pending index. ARGV: now, force, order, index member, delivery id.
# Returns 1 if re-queued, 0 if it was queued already (a second replay changes nothing).
REQUEUE = """
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'pending' or state == 'sending' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'pending', 'attempts', 0, 'first_attempt_at', 0,
           'next_attempt_at', 0, 'force', ARGV[2], 'reason', 'replayed', 'updated_at', ARGV[1])
redis.call('HINCRBY', KEYS[2], 'open_deliveries', 1)
redis.call('HSET', KEYS[2], 'state', 'accepted', 'reason', 'replayed', 'updated_at', ARGV[1])
redis.call('ZADD', KEYS[3], 'NX', ARGV[3], ARGV[5])
redis.call('SADD', KEYS[4], ARGV[4])
return 1
"""

# A delivery leaves its queue; the queue leaves the pending index once empty (in the same step,
# so an enqueue cannot slip in between). KEYS: pending zset, pending index. ARGV: delivery id,
# index member. Returns the deliveries left in the queue.
DEQUEUE = """
redis.call('ZREM', KEYS[1], ARGV[1])
local left = redis.call('ZCARD', KEYS[1])
if left == 0 then redis.call('SREM', KEYS[2], ARGV[2]) end
return left
"""

# Take back a START_ATTEMPT whose send did not happen (a batch stopped at its target's first
# failure), while the delivery is still `sending`. KEYS: delivery hash. ARGV: now.
UNSTART_ATTEMPT = """
if redis.call('HGET', KEYS[1], 'state') ~= 'sending' then return -1 end
local n = redis.call('HINCRBY', KEYS[1], 'attempts', -1)
if n <= 0 then redis.call('HSET', KEYS[1], 'first_attempt_at', 0) end
redis.call('HSET', KEYS[1], 'state', 'pending', 'updated_at', ARGV[1])
return n
"""
