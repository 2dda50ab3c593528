-- Checkpoints near a point (services/geo/cache.py, GeoCache.nearby_checkpoints).
-- KEYS[1] checkpoint geo set, KEYS[2] its info hash; ARGV lon, lat, radius m,
-- count. nil when the set must be rebuilt, else the json of each candidate.
local n = redis.call('HGET', KEYS[2], '_n')
if not n then return false end
local ids = {}
if tonumber(redis.call('HGET', KEYS[2], '_g') or '0') > 0 then
  if redis.call('EXISTS', KEYS[1]) == 0 then return false end
  ids = redis.call('GEOSEARCH', KEYS[1], 'FROMLONLAT', ARGV[1], ARGV[2],
    'BYRADIUS', ARGV[3], 'm', 'ASC', 'COUNT', ARGV[4])
end
local polar = redis.call('HGET', KEYS[2], '_polar')
if polar then
  for id in string.gmatch(polar, '%S+') do ids[#ids + 1] = id end
end
if #ids == 0 then return {} end
return redis.call('HMGET', KEYS[2], unpack(ids))
