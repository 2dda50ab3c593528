-- A player's last location (services/geo/cache.py, sightings).
-- KEYS[1] last location; ARGV seen ms, value, expire-at ms. Keeps the newest sighting.
local cur = redis.call('GET', KEYS[1])
if cur then
  local ms = tonumber(string.match(cur, '^(%d+)|'))
  if ms and ms > tonumber(ARGV[1]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[2], 'PXAT', ARGV[3])
return 1
