#!lua
-- SubmitScores for one hunt (cache.py, BoardStore.submit; prelude.lua first).
-- KEYS: board, players, meta, lock, tmp_board, tmp_players. ARGV: the updates (`_blob`).
-- -> {1, applied, stale}, or {0, 0, 0} when the hunt has no board (nothing written).
local epoch = redis.call('HGET', KEYS[3], 'epoch')
if not epoch then return {0, 0, 0} end
local lock = redis.call('GET', KEYS[4])
local order, best, stale = collapse(ARGV[1])
local changed = {}
apply(KEYS[1], KEYS[2], tonumber(epoch), order, best, changed)
if lock then
  apply(KEYS[5], KEYS[6], tonumber(string.match(lock, '|(%-?%d+)$')), order, best, changed)
  local ttl = redis.call('PTTL', KEYS[4])
  if ttl > 0 then
    redis.call('PEXPIRE', KEYS[5], ttl)
    redis.call('PEXPIRE', KEYS[6], ttl)
  end
end
local applied = 0
for _, p in ipairs(order) do
  if changed[p] then applied = applied + 1 else stale = stale + 1 end
end
if applied > 0 then redis.call('HINCRBY', KEYS[3], 'seq', 1) end
return {1, applied, stale}
