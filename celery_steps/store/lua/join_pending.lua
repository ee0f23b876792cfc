-- Add an event to the run collecting a debounce/batch gate's events (the store read the
-- gate: it names this run).
-- KEYS: run, run events, run eids, timers
-- ARGV: mode ('debounce' | 'batch'), event json, now, max size, period ms, timeout ms or '',
--       event id, gate, run id
-- Returns -1 (the run does not exist: not yet, or never), 0 (the run collects for the gate
-- no more), 1 (joined, or had joined before), 2 (joined and the batch is full: it starts now;
-- the store clears the gate).
local meta = redis.call('HMGET', KEYS[1], 'status', 'pend', 'function_id')
if not meta[1] then return -1 end
if meta[1] ~= 'queued' or meta[2] ~= ARGV[8] then return 0 end
if redis.call('SADD', KEYS[3], ARGV[7]) == 0 then
  return 1  -- this event joined already (routed twice)
end
local member = 'r|' .. meta[3] .. '|' .. ARGV[9]
local now = tonumber(ARGV[3])
if ARGV[1] == 'debounce' then
  -- the run will see only the latest event; its start moves to now + period,
  -- but never past the timeout after the first event
  redis.call('SET', KEYS[2], '[' .. ARGV[2] .. ']')
  local due = now + tonumber(ARGV[5])
  if ARGV[6] ~= '' then
    local limit = tonumber(redis.call('HGET', KEYS[1], 'pend_first')) + tonumber(ARGV[6])
    if due > limit then due = limit end
  end
  schedule(KEYS[4], member, due)
  return 1
end
local events = redis.call('GET', KEYS[2]) or '[]'
redis.call('SET', KEYS[2], string.sub(events, 1, -2) .. ',' .. ARGV[2] .. ']')
if redis.call('HINCRBY', KEYS[1], 'pend_size', 1) >= tonumber(ARGV[4]) then
  redis.call('HDEL', KEYS[1], 'pend')  -- the batch is full: it starts now
  schedule(KEYS[4], member, now)
  return 2
end
return 1
