-- For the holder, before it suspends: a waiting step's state and its waiters.
-- KEYS: run, steps, then the waiter index keys of ARGV[4]
-- ARGV: holder, step key, state, waiters
if redis.call('HGET', KEYS[1], 'holder') ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[1], 'status') == 'cancelled' then return 0 end
if not is_final(redis.call('HGET', KEYS[2], ARGV[2])) then
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
end
add_waiters(KEYS[1], ARGV[4])
return 1
