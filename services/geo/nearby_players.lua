-- Players near a point (services/geo/cache.py, GeoCache.nearby_players).
-- KEYS: (geo set, seen) per bucket, newest bucket first; ARGV lon, lat, radius m,
-- cutoff ms, count. A player counts once, at the position of its newest bucket,
-- and only when seen at or after the cutoff. Returns player, lon, lat triples.
local out = {}
local cutoff = tonumber(ARGV[4])
for i = 1, #KEYS / 2 do
  local hits = redis.call('GEOSEARCH', KEYS[2 * i - 1], 'FROMLONLAT', ARGV[1], ARGV[2],
    'BYRADIUS', ARGV[3], 'm', 'ASC', 'COUNT', ARGV[5], 'WITHCOORD')
  for _, hit in ipairs(hits) do
    local player = hit[1]
    local newer = false
    for j = 1, i - 1 do
      if redis.call('ZSCORE', KEYS[2 * j], player) then newer = true break end
    end
    if not newer then
      local ms = redis.call('ZSCORE', KEYS[2 * i], player)
      if ms and tonumber(ms) >= cutoff then
        out[#out + 1] = player
        out[#out + 1] = hit[2][1]
        out[#out + 1] = hit[2][2]
      end
    end
  end
end
return out
