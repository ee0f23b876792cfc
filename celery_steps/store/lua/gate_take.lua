-- Take a place in a concurrency gate for a run (see store/base.py: gates). Gate keys only.
-- KEYS: places, queue, forget, seq
-- ARGV: member, now, lease_ms, limit, base (ms: began to wait - priority), forget at
-- Returns 'held' (it had one: pushed to now + lease), 'taken', or 'limited' (it waits queued).
local now = tonumber(ARGV[2])
local until_ms = now + tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)  -- places whose lease expired
purge_waiters(KEYS[2], KEYS[3], now)
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZADD', KEYS[1], until_ms, ARGV[1])
  leave_queue(KEYS[2], KEYS[3], ARGV[1])
  return 'held'
end
local free = tonumber(ARGV[4]) - redis.call('ZCARD', KEYS[1])
if free > 0 and queue_rank(KEYS[2], KEYS[4], ARGV[1], ARGV[5]) < free then
  redis.call('ZADD', KEYS[1], until_ms, ARGV[1])
  leave_queue(KEYS[2], KEYS[3], ARGV[1])
  return 'taken'
end
queue_rank(KEYS[2], KEYS[4], ARGV[1], ARGV[5])
stay_queued(KEYS[2], KEYS[3], KEYS[4], ARGV[1], tonumber(ARGV[6]), now)
return 'limited'
