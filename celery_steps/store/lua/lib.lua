-- Shared helpers, prepended to every script.
local function is_final(raw)
  if not raw then return false end
  local s = cjson.decode(raw).status
  return s == 'completed' or s == 'failed'
end

-- Redis's own clock in ms: events and waiters are stamped with it, so a wait and an event
-- are ordered by one clock, whichever machines they came from.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Arm a timer; when it is now the shard's earliest, tell the pollers (they subscribe to one
-- channel, '<ns>:timers:signal', whatever the shard: a message is no key, so no slot).
local function schedule(timers, member, due)
  local first = redis.call('ZRANGE', timers, 0, 0, 'WITHSCORES')
  redis.call('ZADD', timers, due, member)
  if first[2] == nil or tonumber(due) < tonumber(first[2]) then
    local channel = string.gsub(timers, ':{[^}]*}:timers$', ':timers:signal')
    redis.call('PUBLISH', channel, due)
  end
end

-- waiters: JSON list of {index_key, member, waiter_json, paths_key, path}; each index entry
-- is '<registered_at ms>|<waiter json>', stamped now.
local function add_waiters(run, waiters_json)
  local new = cjson.decode(waiters_json)
  if #new == 0 then return end
  local raw = redis.call('HGET', run, 'waiters')
  local list = {}
  if raw then list = cjson.decode(raw) end
  local stamp = string.format('%d', now_ms()) .. '|'
  for _, w in ipairs(new) do
    redis.call('HSET', w[1], w[2], stamp .. w[3])
    if w[5] ~= '' then redis.call('SADD', w[4], w[5]) end
    table.insert(list, {w[1], w[2]})
  end
  redis.call('HSET', run, 'waiters', cjson.encode(list))
end

-- The run's waiter entries (all, or only those whose member is `only`) whose index key the
-- caller did not declare in KEYS: nil when every one is declared, else the run's 'waiters'
-- JSON, for the caller to call again with those keys (it changed nothing).
local function undeclared_waiters(run, only)
  local raw = redis.call('HGET', run, 'waiters')
  if not raw then return nil end
  local declared = {}
  for _, key in ipairs(KEYS) do declared[key] = true end
  for _, w in ipairs(cjson.decode(raw)) do
    if (only == nil or w[2] == only) and not declared[w[1]] then return raw end
  end
  return nil
end

-- Drop the waiter index entries of a run (all, or only those whose member is `only`).
local function drop_waiters(run, only)
  local raw = redis.call('HGET', run, 'waiters')
  if not raw then return end
  local keep = {}
  for _, w in ipairs(cjson.decode(raw)) do
    if only == nil or w[2] == only then
      redis.call('HDEL', w[1], w[2])
    else
      table.insert(keep, w)
    end
  end
  if #keep == 0 then
    redis.call('HDEL', run, 'waiters')
  else
    redis.call('HSET', run, 'waiters', cjson.encode(keep))
  end
end

-- The flow-control gates a run's start must pass ({'gates', conc, thr, prio, created_at,
-- started}), or nil: acquire returns them for the store to take places, before it runs again.
local function gates_of(run)
  local g = redis.call('HMGET', run, 'conc', 'thr', 'prio', 'created_at', 'st')
  if not g[1] and not g[2] then return nil end
  return {'gates', g[1] or '', g[2] or '', g[3] or '0', g[4], g[5] or ''}
end

-- What the store must free after the run let go: its concurrency gates ('' for none).
local function conc_of(run)
  return redis.call('HGET', run, 'conc') or ''
end

-- Gate queues (see store/base.py): a run's rank in a gate's waiting queue (0 = the head),
-- queuing it first if it is not: scored by `base` (ms, when it began to wait minus its
-- priority) * 1024 plus an arrival counter, so runs queued in one millisecond keep their order.
local function queue_rank(queue, seq, member, base)
  if not redis.call('ZSCORE', queue, member) then
    local n = redis.call('INCR', seq) % 1024
    redis.call('ZADD', queue, tonumber(base) * 1024 + n, member)
  end
  return redis.call('ZRANK', queue, member)
end

-- Drop the waiters that did not come back by their 'forget' time.
local function purge_waiters(queue, forget, now)
  local gone = redis.call('ZRANGEBYSCORE', forget, '-inf', now, 'LIMIT', 0, 200)
  for _, member in ipairs(gone) do
    redis.call('ZREM', queue, member)
    redis.call('ZREM', forget, member)
  end
end

local function leave_queue(queue, forget, member)
  redis.call('ZREM', queue, member)
  redis.call('ZREM', forget, member)
end

-- A waiter stays queued until `forget_at`; the queue keys live as long as their last waiter.
local function stay_queued(queue, forget, seq, member, forget_at, now)
  redis.call('ZADD', forget, forget_at, member)
  local last = redis.call('ZRANGE', forget, -1, -1, 'WITHSCORES')
  local ttl = math.ceil(tonumber(last[2]) - now) + 1000
  for _, key in ipairs({queue, forget, seq}) do redis.call('PEXPIRE', key, ttl) end
end

-- The run's timer member 'r|<function>|<run>' (vocabulary in store/base.py), or nil.
local function member_of(run, run_id)
  local function_id = redis.call('HGET', run, 'function_id')
  if not function_id then return nil end
  return 'r|' .. function_id .. '|' .. run_id
end

-- Statuses in the order of the status index keys the caller passes (store/redis_keys.py).
local STATUS_SLOT = {queued = 0, running = 1, sleeping = 2, waiting = 3, completed = 4,
  failed = 5, cancelled = 6}

-- Set a run's status and move it between its shard's status indexes; `first` is the KEYS
-- position of the 'queued' index (the seven follow in STATUS_SLOT order).
local function set_status(run, run_id, status, first)
  local m = redis.call('HMGET', run, 'status', 'function_id', 'created_at')
  if m[1] == status then return end
  local entry = run_id .. '|' .. m[2]
  if m[1] and STATUS_SLOT[m[1]] then redis.call('ZREM', KEYS[first + STATUS_SLOT[m[1]]], entry) end
  redis.call('ZADD', KEYS[first + STATUS_SLOT[status]], m[3], entry)
  redis.call('HSET', run, 'status', status)
end

local function ended(status)
  return status == 'completed' or status == 'failed' or status == 'cancelled'
end

-- The run's whole state, as acquire returns it.
local function state_of(run, steps, events)
  return {redis.call('HGETALL', run), redis.call('HGETALL', steps),
    redis.call('GET', events) or '[]'}
end

-- Expire every key of an ended run after the retention.
local function expire_run(keys, retention)
  for _, key in ipairs(keys) do redis.call('PEXPIRE', key, retention) end
end
