-- KEYS: run, steps, timers, events   ARGV: now, error, retention, run id
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return false end
if ended(status) then return status end
redis.call('HSET', KEYS[1], 'status', 'cancelled', 'ended_at', ARGV[1], 'error', ARGV[2])
drop_waiters(KEYS[1], nil)
free_gate(KEYS[1], ARGV[4])
redis.call('ZREM', KEYS[3], member_of(KEYS[1], ARGV[4]))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('PEXPIRE', KEYS[4], ARGV[3])
return status
