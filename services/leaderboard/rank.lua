#!lua flags=no-writes
-- A player's rank (cache.py, BoardStore.rank).
-- KEYS: meta, board, players. ARGV: player.
-- -> {0} missing, {2, count} not on the board, or {1, count, rank0, value}
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then return {0} end
local count = redis.call('ZCARD', KEYS[2])
local rank = redis.call('ZRANK', KEYS[2], ARGV[1])
if not rank then return {2, count} end
return {1, count, rank, redis.call('HGET', KEYS[3], ARGV[1])}
