-- A catalog entry (tag or hunt) written through (services/geo/cache.py).
-- KEYS[1] entry; ARGV version, value, ttl ms. Sets unless a newer version is there.
local cur = redis.call('GET', KEYS[1])
if cur then
  local v = tonumber(string.match(cur, '^(%d+)|'))
  if v and v >= tonumber(ARGV[1]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
