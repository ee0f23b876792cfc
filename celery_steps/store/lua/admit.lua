-- Flow-control admission of one run start.
-- KEYS: gate   ARGV: mode ('rate' | 'throttle'), limit, period_ms, burst, now, unique member
local limit, period, now = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[5])
if ARGV[1] == 'rate' then
  -- a sliding window log: at most `limit` admissions in the last `period` ms
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - period)
  if redis.call('ZCARD', KEYS[1]) >= limit then return -1 end
  redis.call('ZADD', KEYS[1], now, ARGV[6])
  redis.call('PEXPIRE', KEYS[1], period)
  return 0
end
-- throttle (GCRA): each start advances the theoretical arrival time by period/limit
local interval = period / limit
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.3f', tat), 'PX', math.ceil(tat - now + period))
local start = tat - tonumber(ARGV[4]) * interval
if start <= now then return 0 end
return math.ceil(start - now)
