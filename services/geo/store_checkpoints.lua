-- A hunt's checkpoint set rebuilt from Postgres (services/geo/cache.py,
-- GeoCache.store_checkpoints).
-- KEYS[1] geo set, KEYS[2] info hash; ARGV version, ttl ms, polar ids, n geo,
-- then n (lon, lat, id) triples, then (id, json) pairs. Replaces the set unless
-- a newer (or the same, complete) version is there.
local CHUNK = 999 -- values per GEOADD/HSET (Lua's unpack limit is ~8000)
local v = tonumber(ARGV[1])
local sv = redis.call('HGET', KEYS[2], '_v')
if sv then
  sv = tonumber(sv)
  local g = tonumber(redis.call('HGET', KEYS[2], '_g') or '0')
  local complete = redis.call('HEXISTS', KEYS[2], '_n') == 1
    and (g == 0 or redis.call('EXISTS', KEYS[1]) == 1)
  if sv > v or (sv == v and complete) then return 0 end
end
redis.call('DEL', KEYS[1], KEYS[2])
local ngeo = tonumber(ARGV[4])
local first = 5
local last = first + 3 * ngeo - 1
for s = first, last, CHUNK do
  local e = math.min(s + CHUNK - 1, last)
  redis.call('GEOADD', KEYS[1], unpack(ARGV, s, e))
end
if ngeo > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
local npairs = (#ARGV - last) / 2
redis.call('HSET', KEYS[2], '_v', ARGV[1], '_n', npairs, '_g', ngeo, '_polar', ARGV[3])
for s = last + 1, #ARGV, CHUNK + 1 do
  local e = math.min(s + (CHUNK + 1) - 1, #ARGV)
  redis.call('HSET', KEYS[2], unpack(ARGV, s, e))
end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
