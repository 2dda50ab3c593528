#!lua flags=no-writes
-- A player and its neighbours (cache.py, BoardStore.around).
-- KEYS: meta, board, players. ARGV: player, n.
-- -> {0} missing, {2, count} not on the board, or {1, count, start, members, values}
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then return {0} end
local count = redis.call('ZCARD', KEYS[2])
local rank = redis.call('ZRANK', KEYS[2], ARGV[1])
if not rank then return {2, count} end
local n = tonumber(ARGV[2])
local start = math.max(0, rank - n)
local members = redis.call('ZRANGE', KEYS[2], start, rank + n)
return {1, count, start, members, redis.call('HMGET', KEYS[3], unpack(members))}
