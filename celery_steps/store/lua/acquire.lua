-- KEYS: run, steps, lease, timers, signal, events
-- ARGV: token, now, lease_ms, run id, concurrency retry ms
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing'} end
if ended(status) then return {'ended'} end
if not redis.call('SET', KEYS[3], ARGV[1], 'NX', 'PX', ARGV[3]) then
  redis.call('HSET', KEYS[1], 'wake', '1')
  return {'busy'}
end
local member = member_of(KEYS[1], ARGV[4])
local gate, limit = gate_of(KEYS[1])
if gate then
  redis.call('ZREMRANGEBYSCORE', gate, '-inf', ARGV[2])
  if not redis.call('ZSCORE', gate, ARGV[4]) and redis.call('ZCARD', gate) >= limit then
    redis.call('DEL', KEYS[3])
    schedule(KEYS[4], KEYS[5], member, tonumber(ARGV[2]) + tonumber(ARGV[5]))
    return {'limited'}
  end
  redis.call('ZADD', gate, tonumber(ARGV[2]) + tonumber(ARGV[3]), ARGV[4])
end
local pend = redis.call('HGET', KEYS[1], 'pend')
if pend and redis.call('GET', pend) == ARGV[4] then
  redis.call('DEL', pend)  -- the run starts: later events open a new debounce/batch
end
redis.call('HSET', KEYS[1], 'status', 'running', 'wake', '0')
schedule(KEYS[4], KEYS[5], member, tonumber(ARGV[2]) + 2 * tonumber(ARGV[3]))
return {'ok', redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2]),
  redis.call('GET', KEYS[6]) or '[]'}
