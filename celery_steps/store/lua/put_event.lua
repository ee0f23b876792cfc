-- KEYS: event, timers   ARGV: event json, ttl_ms, route_at, member
local envelope = '{"received_at":' .. string.format('%d', now_ms()) .. ',"event":' .. ARGV[1] .. '}'
if not redis.call('SET', KEYS[1], envelope, 'NX', 'PX', ARGV[2]) then
  -- a retried call whose reply was lost stored this very event: say so again
  local stored = redis.call('GET', KEYS[1])
  local tail = ',"event":' .. ARGV[1] .. '}'
  if stored and string.sub(stored, -#tail) == tail then return 1 end
  return 0
end
schedule(KEYS[2], ARGV[4], ARGV[3])
return 1
