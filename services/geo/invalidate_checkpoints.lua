-- After a checkpoint write (services/geo/cache.py, GeoCache.invalidate_checkpoints).
-- KEYS[1] geo set, KEYS[2] info hash; ARGV version, ttl ms. Drops the set and
-- leaves a marker so no older rebuild can come back.
local sv = tonumber(redis.call('HGET', KEYS[2], '_v') or '0')
if sv > tonumber(ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('HSET', KEYS[2], '_v', ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
