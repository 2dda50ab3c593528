#!lua flags=allow-oom
-- Drops a failed rebuild (cache.py, BoardStore.abort_build).
-- KEYS: lock, tmp_board, tmp_players. ARGV: build_id. Frees memory, so allow-oom.
local lock = redis.call('GET', KEYS[1])
if lock and string.sub(lock, 1, #ARGV[1] + 1) == ARGV[1] .. '|' then
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
  return 1
end
return 0
