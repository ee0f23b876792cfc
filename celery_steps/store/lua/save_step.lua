-- KEYS: run, steps   ARGV: holder, step key, state
if redis.call('HGET', KEYS[1], 'status') == 'cancelled' then return {'cancelled'} end
if redis.call('HGET', KEYS[1], 'holder') ~= ARGV[1] then return {'lost'} end
local current = redis.call('HGET', KEYS[2], ARGV[2])
if current == ARGV[3] then return {'ok'} end  -- a retried call: this very state is stored
if is_final(current) then return {'exists', current} end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('HDEL', KEYS[1], 'crashes', 'cur')  -- progress; no step running now
return {'ok'}
