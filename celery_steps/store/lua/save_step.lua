-- KEYS: run, steps, lease   ARGV: token, step key, state
if redis.call('HGET', KEYS[1], 'status') == 'cancelled' then return {'cancelled'} end
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return {'lost'} end
local current = redis.call('HGET', KEYS[2], ARGV[2])
if is_final(current) then return {'exists', current} end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
return {'ok'}
