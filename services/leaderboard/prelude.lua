-- The functions the board scripts share (submit, top, write_page,
-- finish_build), put after each one's first line by libs.rediskit.Script.
-- The encoding's constants are keys.py's (keys.ENCODING), templated in at load.
local BIAS, MAX_TOTAL, SPAN = {{TOTAL_BIAS}}, {{MAX_TOTAL}}, {{TIME_SPAN}}
-- keys.encode_score, exact in doubles: the result lies in [-2^53, 2^53 - 1]
local function encode(t, ms, epoch)
  if t > MAX_TOTAL then t = MAX_TOTAL end
  local off = ms - epoch
  if off < 0 then off = 0 elseif off >= SPAN then off = SPAN - 1 end
  return string.format('%.0f', (BIAS - t) * SPAN + off)
end
-- a > b for decimal strings without leading zeros (exact beyond 2^53, and
-- independent of the server's locale, which Lua's string < is not)
local function newer(a, b)
  if #a ~= #b then return #a > #b end
  if #a < 16 then return tonumber(a) > tonumber(b) end
  for i = 1, #a do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x > y end
  end
  return false
end
-- a <= b byte-wise (the order Redis gives equal scores)
local function not_after(a, b)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a <= #b
end
-- cmd key args..., in chunks (Lua's unpack is bounded)
local function chunked(cmd, key, flat, n)
  for i = 1, #flat, n do
    redis.call(cmd, key, unpack(flat, i, math.min(i + n - 1, #flat)))
  end
end
-- Updates come as one ARGV blob of lines `player version total reached_ms`
-- (one argument is far cheaper to send than four per update). Per player the
-- newest version is kept; the others are stale.
local function collapse(blob)
  local order, best, stale = {}, {}, 0
  for p, v, t, m in string.gmatch(blob, '(%S+) (%d+) (%d+) (%d+)') do
    local b = best[p]
    if not b then
      best[p] = {v, t, m}
      order[#order + 1] = p
    else
      stale = stale + 1
      if newer(v, b[1]) then best[p] = {v, t, m} end
    end
  end
  return order, best, stale
end
-- Writes each kept update whose version is newer than the board's; marks changed[p].
local function apply(board, players, epoch, order, best, changed)
  local current = {}
  for i = 1, #order, 1000 do
    local part = redis.call('HMGET', players, unpack(order, i, math.min(i + 999, #order)))
    for j = 1, #part do current[i + j - 1] = part[j] end
  end
  local zargs, hargs = {}, {}
  for k, p in ipairs(order) do
    local u = best[p]
    local cur = current[k]
    if not cur or newer(u[1], string.match(cur, '^(%d+)')) then
      zargs[#zargs + 1] = encode(tonumber(u[2]), tonumber(u[3]), epoch)
      zargs[#zargs + 1] = p
      hargs[#hargs + 1] = p
      hargs[#hargs + 1] = u[1] .. '|' .. u[2] .. '|' .. u[3]
      changed[p] = true
    end
  end
  chunked('ZADD', board, zargs, 2000)
  chunked('HSET', players, hargs, 2000)
end
-- The epoch in a lock value `build_id|epoch` owned by `id`, or nil.
local function owned(lock, id)
  if not lock or string.sub(lock, 1, #id + 1) ~= id .. '|' then return nil end
  return tonumber(string.sub(lock, #id + 2))
end
