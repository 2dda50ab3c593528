-- A refill from Postgres (services/score/cache.py, HotTier.fill_score and
-- fill_progress). KEYS: score, checkpoints. ARGV: version, total, found,
-- reached_us, ttl_ms, with_checkpoints (0/1), then checkpoint id/value pairs:
-- the whole set. Each key is written only when its cached version is older.
local v = tonumber(ARGV[1])
local cv = tonumber(redis.call('HGET', KEYS[1], 'v') or '-1')
if cv < v then
  redis.call('HSET', KEYS[1], 't', ARGV[2], 'f', ARGV[3], 'v', ARGV[1], 'r', ARGV[4])
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
end
if ARGV[6] == '1' then
  local sv = tonumber(redis.call('HGET', KEYS[2], '_v') or '-1')
  if sv < v then
    redis.call('DEL', KEYS[2])
    redis.call('HSET', KEYS[2], '_v', ARGV[1])
    for i = 7, #ARGV, 2 do
      redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
    end
    redis.call('PEXPIRE', KEYS[2], ARGV[5])
  end
end
return 1
