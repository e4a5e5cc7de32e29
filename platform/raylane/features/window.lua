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
local out = {}
for s = 1, S do out[s] = {} end
local touched = {}
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
      local lo = t - win[s]
      if k == 'c' then
        redis.call('ZADD', key, 'NX', t, eid)
        redis.call('ZREMRANGEBYSCORE', key, '-inf', lo - late[s])
        out[s][n + 1] = redis.call('ZCOUNT', key, lo + 1, t)
      else
        redis.call('ZADD', key, 'NX', t, ARGV[a] .. '|' .. eid)
        a = a + 1
        redis.call('ZREMRANGEBYSCORE', key, '-inf', lo - late[s])
        local sum = 0
        for _, m in ipairs(redis.call('ZRANGEBYSCORE', key, lo + 1, t)) do
          sum = sum + tonumber(string.sub(m, 1, string.find(m, '|', 1, true) - 1))
        end
        out[s][n + 1] = string.format('%.17g', sum)
      end
    end
  end
  n = n + 1
end
for key, seconds in pairs(touched) do redis.call('EXPIRE', key, seconds) end
for s = 1, S do out[s] = table.concat(out[s], ',') end
return out
