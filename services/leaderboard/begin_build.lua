#!lua
-- Takes a hunt's rebuild lock (cache.py, BoardStore.begin_build).
-- KEYS: lock, tmp_board, tmp_players. ARGV: build_id, epoch, ttl_ms. -> 1 taken, 0 held by another
if redis.call('SET', KEYS[1], ARGV[1] .. '|' .. ARGV[2], 'NX', 'PX', ARGV[3]) then
  redis.call('DEL', KEYS[2], KEYS[3])
  return 1
end
return 0
