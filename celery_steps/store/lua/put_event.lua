-- KEYS: event, timers, signal   ARGV: payload, ttl_ms, route_at, member
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end
schedule(KEYS[2], KEYS[3], ARGV[4], ARGV[3])
return 1
