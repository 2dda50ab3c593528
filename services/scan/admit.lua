-- The admission of a scan (services/scan/cache.py, ScanCache.admit), on the
-- player's slot. KEYS: idempotency key, rate bucket, last position.
-- ARGV: bucket capacity, tokens per ms, the pending mark, its TTL in ms.
-- -> {1, answer, lat, lon, acc, at}: a copy was seen (answer or pending mark);
--    {2, retry_after_ms}: rate limited;
--    {0, '', lat, lon, acc, at}: the first copy, marked pending.
local answer = redis.call('GET', KEYS[1])
local last = redis.call('HMGET', KEYS[3], 'lat', 'lon', 'acc', 'at')
if answer then
  return {1, answer, last[1], last[2], last[3], last[4]}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local capacity = tonumber(ARGV[1])
local per_ms = tonumber(ARGV[2])
local bucket = redis.call('HMGET', KEYS[2], 'tokens', 'ts')
local tokens = tonumber(bucket[1])
local ts = tonumber(bucket[2])
if tokens == nil or ts == nil then
  tokens = capacity
  ts = now
end
tokens = math.min(capacity, tokens + math.max(0, now - ts) * per_ms)
if tokens < 1 then
  return {2, tostring(math.ceil((1 - tokens) / per_ms))}
end
redis.call('HSET', KEYS[2], 'tokens', tostring(tokens - 1), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[2], math.ceil(capacity / per_ms) + 1000)
redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
return {0, '', last[1], last[2], last[3], last[4]}
