-- KEYS: run   ARGV: holder, run id
-- Returns 0 when not held, else {concurrency gates, timer member}: the store frees them.
local current = redis.call('HGET', KEYS[1], 'holder')
if current ~= ARGV[1] then
  -- a retried call after a lost reply: let go already (acquire forgets 'rel'), same answer
  if not current and redis.call('HGET', KEYS[1], 'rel') == ARGV[1] then
    return {conc_of(KEYS[1]), member_of(KEYS[1], ARGV[2])}
  end
  return 0
end
redis.call('HDEL', KEYS[1], 'holder', 'cur')
redis.call('HSET', KEYS[1], 'rel', ARGV[1])
return {conc_of(KEYS[1]), member_of(KEYS[1], ARGV[2])}
