-- KEYS: timers   ARGV: now, limit, redo_ms
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, ARGV[2])
local score = tonumber(ARGV[1]) + tonumber(ARGV[3])
local out = {}
for i = 1, #due, 2 do
  redis.call('ZADD', KEYS[1], score, due[i])
  table.insert(out, due[i])
end
return {out, tostring(score)}
