-- Make timers due now (a member due earlier stays so) and tell the pollers.
-- KEYS: timers   ARGV: members
for _, member in ipairs(ARGV) do redis.call('ZADD', KEYS[1], 'LT', 0, member) end
local channel = string.gsub(KEYS[1], ':{[^}]*}:timers$', ':timers:signal')
redis.call('PUBLISH', channel, 0)
return 1
