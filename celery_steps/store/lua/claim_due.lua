-- KEYS: timers, last claim   ARGV: now, limit, redo_ms, claim id
-- A claim is remembered (for redo_ms) so that a retried call after a lost reply answers the
-- members it claimed, which are no longer due.
local last = redis.call('GET', KEYS[2])
if last and string.sub(last, 1, #ARGV[4] + 1) == ARGV[4] .. '|' then
  return cjson.decode(string.sub(last, #ARGV[4] + 2))
end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, ARGV[2])
local score = tonumber(ARGV[1]) + tonumber(ARGV[3])
local out = {}
for i = 1, #due, 2 do
  redis.call('ZADD', KEYS[1], score, due[i])
  table.insert(out, due[i])
end
if #out > 0 then
  redis.call('SET', KEYS[2], ARGV[4] .. '|' .. cjson.encode({out, tostring(score)}),
    'PX', ARGV[3])
end
return {out, tostring(score)}
