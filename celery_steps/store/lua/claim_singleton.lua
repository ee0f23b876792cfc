-- KEYS: gate   ARGV: run id, force ('1'), namespace
local holder = redis.call('GET', KEYS[1])
if holder and ARGV[2] ~= '1' then
  local status = redis.call('HGET', ARGV[3] .. ':run:{' .. holder .. '}', 'status')
  if status and not ended(status) then return holder end
end
redis.call('SET', KEYS[1], ARGV[1])
return false
