-- KEYS: run, steps, timers, events, eids, done, the shard's seven status indexes, then the
--       index keys of the run's waiters (their entries are dropped)
-- ARGV: now, error, retention, run id, notify due
-- Returns false (unknown), {previous status} when it had ended, {'keys', waiters} when a
-- waiter index key was not declared (nothing changed), else {previous status, concurrency
-- gates, throttle gate, timer member}: the store frees the run's places and queue
-- entries.
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return false end
if ended(status) then return {status} end
local undeclared = undeclared_waiters(KEYS[1], nil)
if undeclared then return {'keys', undeclared} end
local gates = redis.call('HMGET', KEYS[1], 'conc', 'thr')
set_status(KEYS[1], ARGV[4], 'cancelled', 7)
redis.call('HSET', KEYS[1], 'ended_at', ARGV[1], 'error', ARGV[2], 'notify', '1')
redis.call('HDEL', KEYS[1], 'holder', 'crashes', 'wake', 'sop')
drop_waiters(KEYS[1], nil)
schedule(KEYS[3], member_of(KEYS[1], ARGV[4]), ARGV[5])
redis.call('RPUSH', KEYS[6], 'cancelled')  -- tells wait_for_run
expire_run({KEYS[1], KEYS[2], KEYS[4], KEYS[5], KEYS[6]}, ARGV[3])
return {status, gates[1] or '', gates[2] or '', member_of(KEYS[1], ARGV[4])}
