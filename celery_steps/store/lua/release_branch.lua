-- KEYS: run   ARGV: step key, holder
local field = 'b:' .. ARGV[1]
local raw = redis.call('HGET', KEYS[1], field)
if raw and string.sub(raw, 1, #ARGV[2] + 1) == ARGV[2] .. '|' then
  redis.call('HDEL', KEYS[1], field)
end
return 1
