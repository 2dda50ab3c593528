-- A committed unlock written through (services/score/cache.py, HotTier.record_unlock).
-- KEYS: score, checkpoints. ARGV: version, total, found, reached_us, ttl_ms,
-- checkpoint_id, checkpoint value. Writes only a newer version; the set gains
-- the checkpoint only when it was complete for version - 1 (or this is the
-- player's first unlock). -> 1 written, 0 a newer version is cached.
local v = tonumber(ARGV[1])
local cv = tonumber(redis.call('HGET', KEYS[1], 'v') or '-1')
if cv >= v then return 0 end
redis.call('HSET', KEYS[1], 't', ARGV[2], 'f', ARGV[3], 'v', ARGV[1], 'r', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
local sv = tonumber(redis.call('HGET', KEYS[2], '_v') or '-1')
if sv == v - 1 or (v == 1 and sv == -1) then
  redis.call('HSET', KEYS[2], '_v', ARGV[1], ARGV[6], ARGV[7])
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
end
return 1
