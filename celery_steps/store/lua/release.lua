-- KEYS: run   ARGV: holder, run id
-- Returns 0 when not held, else {concurrency gates, timer member}: the store frees them.
if redis.call('HGET', KEYS[1], 'holder') ~= ARGV[1] then return 0 end
redis.call('HDEL', KEYS[1], 'holder', 'cur')
return {conc_of(KEYS[1]), member_of(KEYS[1], ARGV[2])}
