-- The gate holds '<run id>|<claimed at>'.
-- KEYS: gate   ARGV: run id, force ('1'), namespace, now, claim ms
local raw = redis.call('GET', KEYS[1])
if raw and ARGV[2] ~= '1' then
  local sep = string.find(raw, '|', 1, true)
  local holder = raw
  local claimed = 0
  if sep then
    holder = string.sub(raw, 1, sep - 1)
    claimed = tonumber(string.sub(raw, sep + 1))
  end
  if holder ~= ARGV[1] then
    local status = redis.call('HGET', ARGV[3] .. ':run:{' .. holder .. '}', 'status')
    if status then
      if not ended(status) then return holder end
    elseif tonumber(ARGV[4]) - claimed < tonumber(ARGV[5]) then
      return holder  -- claimed moments ago: its run is being created
    end
  end
end
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. ARGV[4])
return false
