#!lua flags=no-writes
-- A page of the board (cache.py, BoardStore.top; prelude.lua first).
-- KEYS: meta, board, players. ARGV: limit [, total, reached_ms, player]: the cursor.
-- -> {0} missing, or {1, player_count, start, members, values}
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then return {0} end
local count = redis.call('ZCARD', KEYS[2])
local start = 0
if #ARGV >= 4 then
  local s = encode(tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(epoch))
  local p = ARGV[4]
  local cur = redis.call('ZSCORE', KEYS[2], p)
  if cur and tonumber(cur) == tonumber(s) then
    start = redis.call('ZRANK', KEYS[2], p) + 1
  else
    -- the cursor's player moved: everything below score s, plus the members
    -- with exactly score s that sort before or at p
    start = redis.call('ZCOUNT', KEYS[2], '-inf', '(' .. s)
    local offset = 0
    while true do
      local same = redis.call('ZRANGEBYSCORE', KEYS[2], s, s, 'LIMIT', offset, 256)
      local past = false
      for _, m in ipairs(same) do
        if not_after(m, p) then start = start + 1 else past = true break end
      end
      if past or #same < 256 then break end
      offset = offset + 256
    end
  end
end
local members = redis.call('ZRANGE', KEYS[2], start, start + tonumber(ARGV[1]) - 1)
local values = {}
if #members > 0 then values = redis.call('HMGET', KEYS[3], unpack(members)) end
return {1, count, start, members, values}
