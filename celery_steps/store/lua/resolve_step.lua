-- Compare-and-set a suspended step's state from outside the run (merge done by the caller,
-- so JSON never round-trips through cjson).
-- KEYS: run, steps, timers, then the index key of the waiter (ARGV[7]) to drop
-- ARGV: step key, expected ('' = absent), new, wake_at, wake, run id, waiter
local status = redis.call('HGET', KEYS[1], 'status')
if not status or ended(status) then return 0 end
local current = redis.call('HGET', KEYS[2], ARGV[1])
if current == ARGV[3] then return 1 end  -- a retried call: this very state won already
if is_final(current) then return 0 end
if (current or '') ~= ARGV[2] then return -1 end
local undeclared = undeclared_waiters(KEYS[1], ARGV[7])
if undeclared then return {'keys', undeclared} end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
drop_waiters(KEYS[1], ARGV[7])
if ARGV[5] == '1' then
  redis.call('HSET', KEYS[1], 'wake', '1')
  schedule(KEYS[3], member_of(KEYS[1], ARGV[6]), ARGV[4])
end
return 1
