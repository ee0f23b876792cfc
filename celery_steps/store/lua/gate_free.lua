-- Give back a run's place in a concurrency gate (and its place in the queue). Gate keys only.
-- KEYS: places, queue, forget   ARGV: member, limit, now ('' when the caller has no time:
-- expired places and waiters are then left for the next take to drop)
-- Returns the waiters owed the free places now (the head of the queue), for the store to wake.
redis.call('ZREM', KEYS[1], ARGV[1])
leave_queue(KEYS[2], KEYS[3], ARGV[1])
if ARGV[3] ~= '' then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
  purge_waiters(KEYS[2], KEYS[3], tonumber(ARGV[3]))
end
local free = tonumber(ARGV[2]) - redis.call('ZCARD', KEYS[1])
if free <= 0 then return {} end
return redis.call('ZRANGE', KEYS[2], 0, free - 1)
