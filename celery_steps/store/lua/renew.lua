-- KEYS: run, timers
-- ARGV: holder, watchdog due, run id, step running ('<since ms>|<key>' or '')
-- Returns 0 when not held, else {concurrency gates ('' for none), timer member}: the store
-- pushes its places there.
if redis.call('HGET', KEYS[1], 'holder') ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 0 end
if ARGV[4] == '' then
  redis.call('HDEL', KEYS[1], 'cur')
else
  redis.call('HSET', KEYS[1], 'cur', ARGV[4])
end
redis.call('ZADD', KEYS[2], ARGV[2], member_of(KEYS[1], ARGV[3]))
return {conc_of(KEYS[1]), member_of(KEYS[1], ARGV[3])}
