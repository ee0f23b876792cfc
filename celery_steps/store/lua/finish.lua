-- KEYS: run, steps, lease, timers, events
-- ARGV: token, status, ended_at, output, error, retention, run id
if redis.call('GET', KEYS[3]) ~= ARGV[1] then
  -- A retried call after a lost reply: the run already ended exactly so.
  local done = redis.call('HMGET', KEYS[1], 'status', 'ended_at')
  if done[1] == ARGV[2] and done[2] == ARGV[3] then return 1 end
  return 0
end
if redis.call('HGET', KEYS[1], 'status') == 'cancelled' then
  redis.call('DEL', KEYS[3])
  return 0
end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'ended_at', ARGV[3])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'output', ARGV[4]) end
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'error', ARGV[5]) end
drop_waiters(KEYS[1], nil)
free_gate(KEYS[1], ARGV[7])
redis.call('DEL', KEYS[3])
redis.call('ZREM', KEYS[4], member_of(KEYS[1], ARGV[7]))
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call('PEXPIRE', KEYS[2], ARGV[6])
redis.call('PEXPIRE', KEYS[5], ARGV[6])
return 1
