-- A run's whole state in one consistent read ({} when it does not exist).
-- KEYS: run, steps, events
if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
return state_of(KEYS[1], KEYS[2], KEYS[3])
