-- KEYS: run   ARGV: holder, run id
if redis.call('HGET', KEYS[1], 'holder') ~= ARGV[1] then return 0 end
redis.call('HDEL', KEYS[1], 'holder', 'cur')
free_gate(KEYS[1], ARGV[2])
return 1
