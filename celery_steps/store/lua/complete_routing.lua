-- KEYS: event runs, timers   ARGV: run ids json, ttl_ms, member
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[3])
return 1
