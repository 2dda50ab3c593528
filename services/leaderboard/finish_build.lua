#!lua flags=allow-oom
-- Publishes a rebuilt board (cache.py, BoardStore.finish_build; prelude.lua first).
-- KEYS: lock, tmp_board, tmp_players, board, players, meta. ARGV: build_id, built_at_ms.
-- -> players on the new board, or -1 when the lock was lost. Frees memory, so allow-oom.
local epoch = owned(redis.call('GET', KEYS[1]), ARGV[1])
if not epoch then return -1 end
redis.call('UNLINK', KEYS[4], KEYS[5])
for i = 2, 3 do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('PERSIST', KEYS[i])
    redis.call('RENAME', KEYS[i], KEYS[i + 2])
  end
end
redis.call('HSET', KEYS[6], 'build', ARGV[1], 'epoch', string.format('%.0f', epoch), 'built_at', ARGV[2])
redis.call('HINCRBY', KEYS[6], 'seq', 1)
redis.call('DEL', KEYS[1])
return redis.call('ZCARD', KEYS[4])
