-- Rate-limit admission of one run start: a sliding window log of admission times.
-- KEYS: gate   ARGV: limit, period_ms, now, unique member
-- Returns 0 when admitted, -1 when `limit` starts were admitted in the last `period` ms.
local limit, period, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - period)
if redis.call('ZCARD', KEYS[1]) >= limit then return -1 end
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('PEXPIRE', KEYS[1], period)
return 0
