-- A scan's answer and the player's new position (services/scan/cache.py,
-- ScanCache.finish), on the player's slot, in one command.
-- KEYS: idempotency key, last position.
-- ARGV: the answer ('' none), its TTL in s; lat ('' none), lon, accuracy,
-- scanned at (ms), the position's expiry (unix ms).
if ARGV[1] ~= '' then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
end
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[2], 'lat', ARGV[3], 'lon', ARGV[4], 'acc', ARGV[5], 'at', ARGV[6])
  -- Counted from the scan, not from this write: a scan applied late (by the
  -- relay) does not keep its location longer.
  redis.call('PEXPIREAT', KEYS[2], ARGV[7])
end
return 0
