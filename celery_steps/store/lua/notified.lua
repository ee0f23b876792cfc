-- KEYS: run, timers   ARGV: run id
if redis.call('HGET', KEYS[1], 'notify') ~= '1' then return 0 end
redis.call('HDEL', KEYS[1], 'notify')
redis.call('ZREM', KEYS[2], member_of(KEYS[1], ARGV[1]))
return 1
