#!lua flags=no-writes
-- What a board is (cache.py, BoardStore.state).
-- KEYS: meta, lock. -> {build, built_at, seq, rebuilding}
local m = redis.call('HMGET', KEYS[1], 'build', 'built_at', 'seq')
return {m[1] or '', m[2] or '0', m[3] or '0', redis.call('EXISTS', KEYS[2])}
