-- KEYS: run, steps, timers, signal, events
-- ARGV: holder, now, lease_ms, run id, concurrency retry ms,
--       dead holder ('' or the holder the caller found dead: it may be replaced),
--       function id (the run must belong to it)
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing'} end
if redis.call('HGET', KEYS[1], 'function_id') ~= ARGV[7] then return {'foreign'} end
if ended(status) then
  if redis.call('HGET', KEYS[1], 'notify') == '1' then
    return {'ended', unpack(state_of(KEYS[1], KEYS[2], KEYS[5]))}
  end
  return {'ended'}
end
local current = redis.call('HGET', KEYS[1], 'holder')
if current == ARGV[1] then
  return {'ok', unpack(state_of(KEYS[1], KEYS[2], KEYS[5]))}  -- a retried call: ours already
end
if current then
  if current ~= ARGV[6] then
    redis.call('HSET', KEYS[1], 'wake', '1')
    return {'busy', current}
  end
  redis.call('HINCRBY', KEYS[1], 'crashes', 1)  -- its process died holding it
end
local member = member_of(KEYS[1], ARGV[4])
local gate, limit = gate_of(KEYS[1])
if gate then
  redis.call('ZREMRANGEBYSCORE', gate, '-inf', ARGV[2])
  if not redis.call('ZSCORE', gate, ARGV[4]) and redis.call('ZCARD', gate) >= limit then
    redis.call('HDEL', KEYS[1], 'holder')
    schedule(KEYS[3], KEYS[4], member, tonumber(ARGV[2]) + tonumber(ARGV[5]))
    return {'limited'}
  end
  redis.call('ZADD', gate, tonumber(ARGV[2]) + tonumber(ARGV[3]), ARGV[4])
end
local pend = redis.call('HGET', KEYS[1], 'pend')
if pend and redis.call('GET', pend) == ARGV[4] then
  redis.call('DEL', pend)  -- the run starts: later events open a new debounce/batch
end
redis.call('HSET', KEYS[1], 'status', 'running', 'wake', '0', 'holder', ARGV[1])
schedule(KEYS[3], KEYS[4], member, tonumber(ARGV[2]) + tonumber(ARGV[3]))
return {'ok', unpack(state_of(KEYS[1], KEYS[2], KEYS[5]))}
