-- A sighting in a live bucket (services/geo/cache.py, sightings).
-- KEYS[1] live geo set of a bucket, KEYS[2] its seen times; ARGV lon, lat,
-- player, seen ms, expire-at ms. An older sighting never moves the player back.
local cur = redis.call('ZSCORE', KEYS[2], ARGV[3])
if cur and tonumber(cur) > tonumber(ARGV[4]) then return 0 end
redis.call('GEOADD', KEYS[1], ARGV[1], ARGV[2], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
redis.call('PEXPIREAT', KEYS[1], ARGV[5])
redis.call('PEXPIREAT', KEYS[2], ARGV[5])
return 1
