-- KEYS: run, steps, timers, the shard's seven status indexes, then the waiter index keys of
--       ARGV[7]
-- ARGV: holder, status, wake_at, step key, step state, attempt, waiters, run id, op id
-- Returns -1 (not held or cancelled), 1 (woken meanwhile: still held) or {0, concurrency
-- gates, timer member}: let go, the store frees its places.
local done = redis.call('HGET', KEYS[1], 'sop')
if done and string.sub(done, 1, #ARGV[9] + 1) == ARGV[9] .. ':' then
  local answer = tonumber(string.sub(done, #ARGV[9] + 2))  -- a retried call: same answer
  if answer == 0 then return {0, conc_of(KEYS[1]), member_of(KEYS[1], ARGV[8])} end
  return answer
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
set_status(KEYS[1], ARGV[8], ARGV[2], 4)
redis.call('HSET', KEYS[1], 'sop', ARGV[9] .. ':0')
redis.call('HDEL', KEYS[1], 'holder')
local member = member_of(KEYS[1], ARGV[8])
if ARGV[3] == '' then
  redis.call('ZREM', KEYS[3], member)
else
  schedule(KEYS[3], member, ARGV[3])
end
return {0, conc_of(KEYS[1]), member}
