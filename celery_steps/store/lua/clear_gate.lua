-- Delete a singleton or debounce/batch gate if it still names the run.
-- KEYS: gate   ARGV: run id
local current = redis.call('GET', KEYS[1])
if current and (current == ARGV[1] or string.sub(current, 1, #ARGV[1] + 1) == ARGV[1] .. '|') then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
