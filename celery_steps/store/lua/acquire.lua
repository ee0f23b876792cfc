-- KEYS: run, steps, timers, events, the shard's seven status indexes
-- ARGV: holder, now, lease_ms, run id, (unused),
--       dead holder ('' or the holder the caller found dead: it may be replaced),
--       function id (the run must belong to it),
--       gates passed ('1' once the store took the run's places in its flow-control gates)
-- A run with flow-control gates is first answered {'gates', ...} (nothing changed): the store
-- takes its places with the gate scripts, then calls again with 'gates passed'.
-- A run that starts collecting no more (debounce/batch) is answered {'ok', ..., gate}: the
-- store clears that gate (a gate key is in another slot).
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing'} end
if redis.call('HGET', KEYS[1], 'function_id') ~= ARGV[7] then return {'foreign'} end
if ended(status) then
  if redis.call('HGET', KEYS[1], 'notify') == '1' then
    return {'ended', unpack(state_of(KEYS[1], KEYS[2], KEYS[4]))}
  end
  -- nothing will wake an ended run any more: a timer left (re-armed when its dead holder
  -- was reaped) would fire for ever
  redis.call('ZREM', KEYS[3], member_of(KEYS[1], ARGV[4]))
  return {'ended'}
end
local current = redis.call('HGET', KEYS[1], 'holder')
if current == ARGV[1] then  -- a retried call: ours already (and the gate it closed)
  local state = state_of(KEYS[1], KEYS[2], KEYS[4])
  return {'ok', state[1], state[2], state[3], redis.call('HGET', KEYS[1], 'pclosed') or ''}
end
if current and current ~= ARGV[6] then
  redis.call('HSET', KEYS[1], 'wake', '1')
  return {'busy', current}
end
if ARGV[8] ~= '1' then
  local gates = gates_of(KEYS[1])
  if gates then return gates end
else
  redis.call('HSET', KEYS[1], 'st', '1')
  redis.call('HDEL', KEYS[1], 'thr')  -- the throttle counts a run's first start only
end
if current then
  redis.call('HINCRBY', KEYS[1], 'crashes', 1)  -- its process died holding it
end
local member = member_of(KEYS[1], ARGV[4])
local pend = redis.call('HGET', KEYS[1], 'pend') or ''
if pend ~= '' then
  redis.call('HDEL', KEYS[1], 'pend')  -- the run starts: later events open a new debounce/batch
  redis.call('HSET', KEYS[1], 'pclosed', pend)
end
set_status(KEYS[1], ARGV[4], 'running', 5)
redis.call('HSET', KEYS[1], 'wake', '0', 'holder', ARGV[1])
redis.call('HDEL', KEYS[1], 'rel')  -- a holder that let go before is no longer answered
schedule(KEYS[3], member, tonumber(ARGV[2]) + tonumber(ARGV[3]))
local state = state_of(KEYS[1], KEYS[2], KEYS[4])
return {'ok', state[1], state[2], state[3], pend}
