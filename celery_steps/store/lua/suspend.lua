-- KEYS: run, steps, lease, timers, signal
-- ARGV: token, status, wake_at, step key, step state, attempt, waiters, run id
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return -1 end
if redis.call('HGET', KEYS[1], 'status') == 'cancelled' then return -1 end
if ARGV[4] ~= '' and not is_final(redis.call('HGET', KEYS[2], ARGV[4])) then
  redis.call('HSET', KEYS[2], ARGV[4], ARGV[5])
end
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'attempt', ARGV[6]) end
add_waiters(KEYS[1], ARGV[7])
if redis.call('HGET', KEYS[1], 'wake') == '1' then
  redis.call('HSET', KEYS[1], 'wake', '0')
  return 1
end
redis.call('HSET', KEYS[1], 'status', ARGV[2])
redis.call('DEL', KEYS[3])
free_gate(KEYS[1], ARGV[8])
local member = member_of(KEYS[1], ARGV[8])
if ARGV[3] == '' then
  redis.call('ZREM', KEYS[4], member)
else
  schedule(KEYS[4], KEYS[5], member, ARGV[3])
end
return 0
