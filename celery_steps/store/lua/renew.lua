-- KEYS: lease, timers, run   ARGV: token, lease_ms, watchdog due, run id, now
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local gate = gate_of(KEYS[3])
if gate then redis.call('ZADD', gate, tonumber(ARGV[5]) + tonumber(ARGV[2]), ARGV[4]) end
local member = member_of(KEYS[3], ARGV[4])
if member then redis.call('ZADD', KEYS[2], ARGV[3], member) end
return 1
