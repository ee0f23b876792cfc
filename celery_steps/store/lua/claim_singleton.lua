-- Compare-and-set a singleton gate (it holds '<run id>|<claimed at>'): the store read it and
-- checked its run (in another slot) is no longer active.
-- KEYS: gate   ARGV: expected ('' = absent), new value
local current = redis.call('GET', KEYS[1]) or ''
if current ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
