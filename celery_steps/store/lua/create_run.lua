-- KEYS: run, functions with runs (set), function runs, timers, run events, run eids,
--       the shard's seven status indexes, then the waiter index keys of ARGV[8]
-- ARGV: id, function_id, created_at, event_ids ('' = the ids of the events), events, parent,
--       start_by, waiters, member, deadlines, concurrency gates (JSON [[key, limit]...] or ''),
--       pending gate ('' or the debounce/batch gate this run collects events for: the store
--       claimed it first), event ids json (for a collecting run), throttle gate (JSON [key,
--       limit, period ms, burst] or ''), priority ms ('' for none), trace context ('' or a
--       traceparent)
if redis.call('EXISTS', KEYS[1]) == 1 then
  -- a retried call whose reply was lost created it: still "created" for the caller
  local mine = redis.call('HMGET', KEYS[1], 'function_id', 'created_at')
  if mine[1] == ARGV[2] and mine[2] == ARGV[3] then return 1 end
  return 0
end
-- every value kept short so the hash stays a compact listpack; events live in their own key
-- (the run id is in the key name and the event ids in the events key: not repeated here)
redis.call('HSET', KEYS[1], 'function_id', ARGV[2], 'created_at', ARGV[3], 'attempt', '0')
set_status(KEYS[1], ARGV[1], 'queued', 7)
redis.call('SET', KEYS[5], ARGV[5])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'event_ids', ARGV[4]) end
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'parent', ARGV[6]) end
if ARGV[10] ~= '' then redis.call('HSET', KEYS[1], 'deadlines', ARGV[10]) end
if ARGV[11] ~= '' then redis.call('HSET', KEYS[1], 'conc', ARGV[11]) end
if ARGV[14] ~= '' then redis.call('HSET', KEYS[1], 'thr', ARGV[14]) end
if ARGV[15] ~= '' then redis.call('HSET', KEYS[1], 'prio', ARGV[15]) end
if ARGV[16] ~= '' then redis.call('HSET', KEYS[1], 'trace', ARGV[16]) end
if ARGV[12] ~= '' then
  redis.call('HSET', KEYS[1], 'pend', ARGV[12], 'pend_first', ARGV[3], 'pend_size', '1')
  for _, event_id in ipairs(cjson.decode(ARGV[13])) do redis.call('SADD', KEYS[6], event_id) end
end
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
if ARGV[7] ~= '' then schedule(KEYS[4], ARGV[9], ARGV[7]) end
add_waiters(KEYS[1], ARGV[8])
return 1
