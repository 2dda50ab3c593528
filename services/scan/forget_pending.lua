-- Drops a copy's own pending mark (services/scan/cache.py, ScanCache.forget),
-- when that copy gives up before its scan has an answer. KEYS: idempotency key.
-- ARGV: the pending mark this copy wrote. Anything else (another copy's mark,
-- or the answer a driver wrote meanwhile) is left alone. -> 1 dropped, 0 not.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
