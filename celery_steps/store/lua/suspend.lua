-- KEYS: run, steps, timers, signal
-- ARGV: holder, status, wake_at, step key, step state, attempt, waiters, run id, op id
local done = redis.call('HGET', KEYS[1], 'sop')
if done and string.sub(done, 1, #ARGV[9] + 1) == ARGV[9] .. ':' then
  return tonumber(string.sub(done, #ARGV[9] + 2))  -- a retried call: same answer
end
if redis.call('HGET', KEYS[1], 'holder') ~= ARGV[1] then return -1 end
if redis.call('HGET', KEYS[1], 'status') == 'cancelled' then return -1 end
if ARGV[4] ~= '' and not is_final(redis.call('HGET', KEYS[2], ARGV[4])) then
  redis.call('HSET', KEYS[2], ARGV[4], ARGV[5])
end
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'attempt', ARGV[6]) end
redis.call('HDEL', KEYS[1], 'crashes', 'cur')
add_waiters(KEYS[1], ARGV[7])
if redis.call('HGET', KEYS[1], 'wake') == '1' then
  redis.call('HSET', KEYS[1], 'wake', '0', 'sop', ARGV[9] .. ':1')
  return 1
end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'sop', ARGV[9] .. ':0')
redis.call('HDEL', KEYS[1], 'holder')
free_gate(KEYS[1], ARGV[8])
local member = member_of(KEYS[1], ARGV[8])
if ARGV[3] == '' then
  redis.call('ZREM', KEYS[3], member)
else
  schedule(KEYS[3], KEYS[4], member, ARGV[3])
end
return 0
