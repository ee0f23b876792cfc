-- KEYS: run, timers
-- ARGV: holder, watchdog due, run id, gate score, step running ('<since ms>|<key>' or '')
if redis.call('HGET', KEYS[1], 'holder') ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 0 end
if ARGV[5] == '' then
  redis.call('HDEL', KEYS[1], 'cur')
else
  redis.call('HSET', KEYS[1], 'cur', ARGV[5])
end
local gate = gate_of(KEYS[1])
if gate then redis.call('ZADD', gate, 'XX', ARGV[4], ARGV[3]) end
redis.call('ZADD', KEYS[2], ARGV[2], member_of(KEYS[1], ARGV[3]))
return 1
