-- KEYS: run, steps, timers, events, eids, done, the shard's seven status indexes, then the
--       index keys of the run's waiters (their entries are dropped)
-- ARGV: holder, status, ended_at, output, error, retention, run id, notify due
-- Returns 0 when not ended by this call, {'keys', waiters} when a waiter index key was not
-- declared (nothing changed), else {1, concurrency gates, timer member}: the store frees
-- its places there.
if redis.call('HGET', KEYS[1], 'holder') ~= ARGV[1] then
  -- A retried call after a lost reply: the run already ended exactly so.
  local done = redis.call('HMGET', KEYS[1], 'status', 'ended_at')
  if done[1] == ARGV[2] and done[2] == ARGV[3] then
    return {1, conc_of(KEYS[1]), member_of(KEYS[1], ARGV[7])}
  end
  return 0
end
if redis.call('HGET', KEYS[1], 'status') == 'cancelled' then
  redis.call('HDEL', KEYS[1], 'holder')
  return 0
end
local undeclared = undeclared_waiters(KEYS[1], nil)
if undeclared then return {'keys', undeclared} end
set_status(KEYS[1], ARGV[7], ARGV[2], 7)
redis.call('HSET', KEYS[1], 'ended_at', ARGV[3], 'notify', '1')
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'output', ARGV[4]) end
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'error', ARGV[5]) end
redis.call('HDEL', KEYS[1], 'holder', 'crashes', 'wake', 'sop', 'cur')
drop_waiters(KEYS[1], nil)
-- the outbox: until the runtime confirms the notifications, this timer retries them
schedule(KEYS[3], member_of(KEYS[1], ARGV[7]), ARGV[8])
redis.call('RPUSH', KEYS[6], ARGV[2])  -- tells wait_for_run
expire_run({KEYS[1], KEYS[2], KEYS[4], KEYS[5], KEYS[6]}, ARGV[6])
return {1, conc_of(KEYS[1]), member_of(KEYS[1], ARGV[7])}
