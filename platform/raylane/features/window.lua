-- raylane window features: update and read every spec for a whole batch, atomically.
-- Semantics are raylane.features.window.ReferenceWindowState's (see its docstring).
--
-- ARGV[1]            S, the number of specs
-- ARGV[2 .. 1+4S]    per spec: kind ('c' count | 's' sum | 'f' first_seen), window_ms,
--                    lateness_ms, ttl_s (expiry of the spec's keys after their last update)
-- then per event     event_id, event_time_ms, then one value per sum spec (in spec order)
-- KEYS               event-major: KEYS[(i-1)*S + s] is the state key of event i for spec s
--
-- count / sum keys are sorted sets scored by event time (integer ms, so the open bound
-- "> t - window" is ">= t - window + 1"); a count member is the event id, a sum member is
-- "<value>|<event id>" (a replay of an event carries the same value).
-- first_seen keys are strings holding the first event id seen for the key.
-- Returns S strings: the spec's per-event values joined by ','.
--
-- A sum reads its window with one range scan per key and run; later in-order events of
-- the same key in the run move that window incrementally (only members entering or
-- leaving it are read; Neumaier-compensated), so a hot key costs O(changes), not
-- O(window), per event. Late events (older than the key's newest in the run) scan.
local S = tonumber(ARGV[1])
local kind, win, late, ttl = {}, {}, {}, {}
local a = 2
for s = 1, S do
  kind[s] = ARGV[a]
  win[s] = tonumber(ARGV[a + 1])
  late[s] = tonumber(ARGV[a + 2])
  ttl[s] = tonumber(ARGV[a + 3])
  a = a + 4
end

-- sum of the values of members scored in (lo, hi]
local function range_sum(key, lo, hi)
  local sum = 0
  if hi > lo then
    for _, m in ipairs(redis.call('ZRANGEBYSCORE', key, lo + 1, hi)) do
      sum = sum + tonumber(string.match(m, '^[^|]+'))
    end
  end
  return sum
end

-- Neumaier-compensated running sum: st.s + st.c is the sum of everything added
local function add(st, x)
  local t = st.s + x
  if math.abs(st.s) >= math.abs(x) then
    st.c = st.c + ((st.s - t) + x)
  else
    st.c = st.c + ((x - t) + st.s)
  end
  st.s = t
end

local out = {}
for s = 1, S do out[s] = {} end
local touched = {}
local windows = {}  -- sum key -> {tc = newest event time, s, c}: the sum over (tc - w, tc]
local na = #ARGV
local n = 0
while a <= na do
  local eid = ARGV[a]
  local t = tonumber(ARGV[a + 1])
  a = a + 2
  for s = 1, S do
    local key = KEYS[n * S + s]
    local k = kind[s]
    touched[key] = ttl[s]
    if k == 'f' then
      local prev = redis.call('SET', key, eid, 'NX', 'GET')
      if (not prev) or prev == eid then out[s][n + 1] = '1' else out[s][n + 1] = '0' end
    else
      local w = win[s]
      local lo = t - w
      if k == 'c' then
        redis.call('ZADD', key, 'NX', t, eid)
        redis.call('ZREMRANGEBYSCORE', key, '-inf', lo - late[s])
        out[s][n + 1] = redis.call('ZCOUNT', key, lo + 1, t)
      else
        local v = ARGV[a]
        a = a + 1
        local added = redis.call('ZADD', key, 'NX', t, v .. '|' .. eid) == 1
        local st = windows[key]
        local result
        if st == nil or t - w >= st.tc then  -- first in this run, or no overlap: scan
          st = {tc = t, s = range_sum(key, lo, t), c = 0}
          windows[key] = st
          result = st.s
        elseif t >= st.tc then  -- in order: move the window (before trimming)
          if t > st.tc then
            add(st, -range_sum(key, st.tc - w, lo))
            add(st, range_sum(key, st.tc, t))
            st.tc = t
          elseif added then
            add(st, tonumber(v))
          end
          result = st.s + st.c
        else  -- late: keep the window, count the new member if it falls inside it
          if added and t > st.tc - w then add(st, tonumber(v)) end
          result = range_sum(key, lo, t)
        end
        redis.call('ZREMRANGEBYSCORE', key, '-inf', lo - late[s])
        out[s][n + 1] = string.format('%.17g', result)
      end
    end
  end
  n = n + 1
end
for key, seconds in pairs(touched) do redis.call('EXPIRE', key, seconds) end
for s = 1, S do out[s] = table.concat(out[s], ',') end
return out
