-- KEYS: event runs, timers, event skips
-- ARGV: run ids json, ttl_ms, member, skipped starts json ('' for none)
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if ARGV[4] ~= '' then redis.call('SET', KEYS[3], ARGV[4], 'PX', ARGV[2]) end
redis.call('ZREM', KEYS[2], ARGV[3])
return 1
