-- Hold one parallel branch of a run: hash field 'b:<step key>' = '<holder>|<crashes>'.
-- KEYS: run, steps, events
-- ARGV: step key, holder, dead holder ('' or the one found dead), function id
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing'} end
if redis.call('HGET', KEYS[1], 'function_id') ~= ARGV[4] then return {'foreign'} end
if ended(status) then return {'ended'} end
local field = 'b:' .. ARGV[1]
local raw = redis.call('HGET', KEYS[1], field)
local crashes = 0
if raw then
  local sep = string.find(raw, '|', 1, true)
  local current = string.sub(raw, 1, sep - 1)
  crashes = tonumber(string.sub(raw, sep + 1))
  if current ~= ARGV[2] then
    if current ~= ARGV[3] then return {'busy', current} end
    crashes = crashes + 1  -- its process died running the branch
  end
end
redis.call('HSET', KEYS[1], field, ARGV[2] .. '|' .. crashes)
local state = state_of(KEYS[1], KEYS[2], KEYS[3])
return {'ok', state[1], state[2], state[3], crashes}
