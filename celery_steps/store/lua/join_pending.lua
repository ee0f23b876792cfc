-- Add an event to the open pending run of a debounce/batch gate.
-- KEYS: gate, timers, signal
-- ARGV: mode ('debounce' | 'batch'), event json, now, max size, period ms, timeout ms or '',
--       namespace, event id
local run_id = redis.call('GET', KEYS[1])
if not run_id then return false end
local run = ARGV[7] .. ':run:{' .. run_id .. '}'
if redis.call('HGET', run, 'status') ~= 'queued' then
  redis.call('DEL', KEYS[1])
  return false
end
local events_key = run .. ':events'
local events = redis.call('GET', events_key) or '[]'
if redis.call('SADD', run .. ':eids', ARGV[8]) == 0 then
  return {run_id, 0}  -- this event joined already (routed twice)
end
local member = 'r|' .. redis.call('HGET', run, 'function_id') .. '|' .. run_id
local now = tonumber(ARGV[3])
if ARGV[1] == 'debounce' then
  -- the run will see only the latest event; its start moves to now + period,
  -- but never past the timeout after the first event
  redis.call('SET', events_key, '[' .. ARGV[2] .. ']')
  local due = now + tonumber(ARGV[5])
  if ARGV[6] ~= '' then
    local limit = tonumber(redis.call('HGET', run, 'pend_first')) + tonumber(ARGV[6])
    if due > limit then due = limit end
  end
  schedule(KEYS[2], KEYS[3], member, due)
  return {run_id, 0}
end
redis.call('SET', events_key, string.sub(events, 1, -2) .. ',' .. ARGV[2] .. ']')
if redis.call('HINCRBY', run, 'pend_size', 1) >= tonumber(ARGV[4]) then
  redis.call('DEL', KEYS[1])  -- the batch is full: it starts now, new events open another
  schedule(KEYS[2], KEYS[3], member, now)
  return {run_id, 1}
end
return {run_id, 0}
