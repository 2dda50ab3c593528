#!lua
-- A page of a rebuild (cache.py, BoardStore.write_page; prelude.lua first).
-- KEYS: lock, tmp_board, tmp_players. ARGV: build_id, ttl_ms, the updates. -> -1 lock lost
local epoch = owned(redis.call('GET', KEYS[1]), ARGV[1])
if not epoch then return -1 end
local order, best = collapse(ARGV[3])
apply(KEYS[2], KEYS[3], epoch, order, best, {})
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[2]) end
return #order
