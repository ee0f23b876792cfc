-- A run start through a throttle gate: GCRA (each start moves the theoretical arrival time
-- `tat` by period/limit; `burst` may start at once) with a queue in priority order. Gate keys.
-- KEYS: tat, queue, forget, seq
-- ARGV: mode ('join': queue a run being created; 'take': its start), member,
--       base (ms: created_at - priority), now, limit, period ms, burst, grace ms
-- Returns 0 (start now: 'take' consumed the slot) or the ms until the throttle lets it start.
local now, limit, period = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local interval = period / limit
local tolerance = (tonumber(ARGV[7]) - 1) * interval
purge_waiters(KEYS[2], KEYS[3], now)
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
-- the j-th next start (j = 0, 1, ...) may go once tat + j * interval - tolerance <= now
local allowed = math.floor((now + tolerance - tat) / interval) + 1
local rank = queue_rank(KEYS[2], KEYS[4], ARGV[2], ARGV[3])
if ARGV[1] == 'take' and rank < allowed then
  tat = tat + interval
  redis.call('SET', KEYS[1], string.format('%.3f', tat), 'PX', math.ceil(tat - now + period))
  leave_queue(KEYS[2], KEYS[3], ARGV[2])
  return 0
end
local wait = math.ceil(tat + rank * interval - tolerance - now)
if wait < 0 then wait = 0 end
stay_queued(KEYS[2], KEYS[3], KEYS[4], ARGV[2], now + wait + tonumber(ARGV[8]), now)
return wait
