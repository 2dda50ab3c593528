"""The geo service's Redis: what it holds, the contract it must keep, and how.

Everything here can vanish at any time (allkeys-lru) and is rebuilt from
Postgres: the tag and hunt caches, the checkpoint geo set of each hunt, the
live-player time buckets and each player's last location (keys: see
`services.geo.keys`). Catalog entries carry the catalog version they were
read at; a write never replaces a newer version (a reader that loaded before
an admin write cannot overwrite what the write put there after its commit).

Scripts run by EVALSHA (loaded at start and again after a NOSCRIPT; in a
Redis Cluster pipeline, where redis-py refuses EVALSHA, by EVAL); each touches
the keys of one hash tag, so everything here also runs on Redis Cluster. Every Redis failure surfaces as
`CacheUnavailable`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

from redis.asyncio import RedisCluster
from redis.exceptions import NoScriptError, RedisError

from libs import errors
from libs.rediskit import AnyRedis, RedisContract
from services.geo import keys
from services.geo.model import (
    LIVE_WINDOW_S,
    LOCATION_TTL_S,
    Checkpoint,
    CheckpointSet,
    Grid,
    Hunt,
    HuntStatus,
    Sighting,
    geo_indexable,
)

log = logging.getLogger(__name__)

#: DESIGN.md's Redis table: checkpoint geo set per hunt, live players in time
#: buckets (TTL), last location per player (30 s TTL), tag cache. Everything is
#: rebuildable, so the least recently used key goes first when memory is full.
CONTRACT = RedisContract(policy="allkeys-lru")

T = TypeVar("T")

#: Redis GEO distances use a slightly larger Earth than ours, and positions are
#: stored as 52-bit geohashes (~0.6 m): searches ask for a bit more, and the
#: caller filters with the exact distance.
_SEARCH_SLACK = 1.001
_SEARCH_SLACK_M = 2.0
_MAX_SEARCH_COUNT = 1000
_CHUNK = 999  # values per GEOADD/HSET inside a script (Lua's unpack limit is ~8000)


class CacheUnavailable(errors.Unavailable):
    """The geo Redis did not answer (or answered with an error)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retry_after_s=1.0, reason="CACHE_UNAVAILABLE")


@dataclass(frozen=True, slots=True)
class Versioned(Generic[T]):
    """A cached catalog entry: the value (None: known not to exist) and the
    catalog version it was read at (0 when read as absent)."""

    version: int
    value: T | None


@dataclass(frozen=True, slots=True)
class PlayerSeen:
    """A player position from a live bucket (coordinates as Redis stores them)."""

    player_id: str
    lat: float
    lon: float


# -- scripts ------------------------------------------------------------------


class _Script:
    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


# KEYS[1] entry; ARGV version, value, ttl ms. Sets unless a newer version is there.
_VERSIONED_SET = _Script("""
local cur = redis.call('GET', KEYS[1])
if cur then
  local v = tonumber(string.match(cur, '^(%d+)|'))
  if v and v >= tonumber(ARGV[1]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
""")

# KEYS[1] last location; ARGV seen ms, value, expire-at ms. Keeps the newest sighting.
_LOCATION = _Script("""
local cur = redis.call('GET', KEYS[1])
if cur then
  local ms = tonumber(string.match(cur, '^(%d+)|'))
  if ms and ms > tonumber(ARGV[1]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[2], 'PXAT', ARGV[3])
return 1
""")

# KEYS[1] live geo set of a bucket, KEYS[2] its seen times; ARGV lon, lat,
# player, seen ms, expire-at ms. An older sighting never moves the player back.
_LIVE = _Script("""
local cur = redis.call('ZSCORE', KEYS[2], ARGV[3])
if cur and tonumber(cur) > tonumber(ARGV[4]) then return 0 end
redis.call('GEOADD', KEYS[1], ARGV[1], ARGV[2], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
redis.call('PEXPIREAT', KEYS[1], ARGV[5])
redis.call('PEXPIREAT', KEYS[2], ARGV[5])
return 1
""")

# KEYS: (geo set, seen) per bucket, newest bucket first; ARGV lon, lat, radius m,
# cutoff ms, count. A player counts once, at the position of its newest bucket,
# and only when seen at or after the cutoff. Returns player, lon, lat triples.
_NEARBY_PLAYERS = _Script("""
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
""")

# KEYS[1] checkpoint geo set, KEYS[2] its info hash; ARGV lon, lat, radius m,
# count. nil when the set must be rebuilt, else the json of each candidate.
_NEARBY_CHECKPOINTS = _Script("""
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
""")

# KEYS[1] geo set, KEYS[2] info hash; ARGV version, ttl ms, polar ids, n geo,
# then n (lon, lat, id) triples, then (id, json) pairs. Replaces the set unless
# a newer (or the same, complete) version is there.
_STORE_CHECKPOINTS = _Script(f"""
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
for s = first, last, {_CHUNK} do
  local e = math.min(s + {_CHUNK} - 1, last)
  redis.call('GEOADD', KEYS[1], unpack(ARGV, s, e))
end
if ngeo > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
local npairs = (#ARGV - last) / 2
redis.call('HSET', KEYS[2], '_v', ARGV[1], '_n', npairs, '_g', ngeo, '_polar', ARGV[3])
for s = last + 1, #ARGV, {_CHUNK + 1} do
  local e = math.min(s + {_CHUNK + 1} - 1, #ARGV)
  redis.call('HSET', KEYS[2], unpack(ARGV, s, e))
end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
""")

# KEYS[1] geo set, KEYS[2] info hash; ARGV version, ttl ms. After a checkpoint
# write: drops the set and leaves a marker so no older rebuild can come back.
_INVALIDATE_CHECKPOINTS = _Script("""
local sv = tonumber(redis.call('HGET', KEYS[2], '_v') or '0')
if sv > tonumber(ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('HSET', KEYS[2], '_v', ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
""")

_SCRIPTS = (
    _VERSIONED_SET,
    _LOCATION,
    _LIVE,
    _NEARBY_PLAYERS,
    _NEARBY_CHECKPOINTS,
    _STORE_CHECKPOINTS,
    _INVALIDATE_CHECKPOINTS,
)


# -- encoding -----------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)


def _us(value: datetime) -> int:
    return (value - _EPOCH) // _MICRO


def _dt(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def encode_checkpoint(cp: Checkpoint) -> str:
    return json.dumps(
        {
            "checkpoint_id": cp.checkpoint_id,
            "hunt_id": cp.hunt_id,
            "tag_id": cp.tag_id,
            "name": cp.name,
            "lat": cp.lat,
            "lon": cp.lon,
            "radius_m": cp.radius_m,
            "points": cp.points,
            "first_finder_bonus": cp.first_finder_bonus,
            "active": cp.active,
            "version": cp.version,
        },
        separators=(",", ":"),
    )


def decode_checkpoint(text: str) -> Checkpoint:
    return Checkpoint(**json.loads(text))


def encode_hunt(hunt: Hunt) -> str:
    g = hunt.grid
    return json.dumps(
        {
            "hunt_id": hunt.hunt_id,
            "name": hunt.name,
            "starts_at": _us(hunt.starts_at),
            "ends_at": _us(hunt.ends_at),
            "status": hunt.status.value,
            "grid": [g.origin_lat, g.origin_lon, g.tile_size_m, g.columns, g.rows],
            "created_at": _us(hunt.created_at),
            "updated_at": _us(hunt.updated_at),
            "version": hunt.version,
        },
        separators=(",", ":"),
    )


def decode_hunt(text: str) -> Hunt:
    d = json.loads(text)
    lat, lon, size, columns, rows = d["grid"]
    return Hunt(
        hunt_id=d["hunt_id"],
        name=d["name"],
        starts_at=_dt(d["starts_at"]),
        ends_at=_dt(d["ends_at"]),
        status=HuntStatus(d["status"]),
        grid=Grid(lat, lon, size, columns, rows),
        created_at=_dt(d["created_at"]),
        updated_at=_dt(d["updated_at"]),
        version=d["version"],
    )


def _versioned(raw: str | None, decode: Callable[[str], T]) -> Versioned[T] | None:
    """None for a cache miss, else the entry (whose value may be None: absent)."""
    if raw is None:
        return None
    version, _, payload = raw.partition("|")
    return Versioned(int(version), decode(payload) if payload else None)


def _fmt(value: float) -> str:
    return repr(float(value))


# -- the cache ----------------------------------------------------------------


class GeoCache:
    """The geo Redis. `live_bucket_s` is the width of one live-player bucket."""

    def __init__(
        self,
        redis: AnyRedis,
        *,
        catalog_ttl_s: float,
        negative_ttl_s: float,
        live_bucket_s: int,
    ) -> None:
        self._redis = redis
        # redis-py refuses EVALSHA in cluster pipelines; there the body goes along.
        self._pipeline_sends_body = isinstance(redis, RedisCluster)
        self._catalog_ttl_ms = int(catalog_ttl_s * 1000)
        self._negative_ttl_ms = int(negative_ttl_s * 1000)
        self._bucket_ms = live_bucket_s * 1000

    async def load_scripts(self) -> None:
        try:
            for script in _SCRIPTS:
                await self._redis.script_load(script.source)
        except RedisError as exc:
            raise CacheUnavailable(f"geo redis: {exc}") from exc

    async def _pipeline(self, build: Callable[[Any], None]) -> list[Any]:
        """Runs the commands `build` queues in one round trip (reloading the
        scripts once after a NOSCRIPT: every command queued here is idempotent)."""
        try:
            for attempt in (0, 1):
                pipe = self._redis.pipeline(transaction=False)
                build(pipe)
                results = await pipe.execute(raise_on_error=False)
                if attempt == 0 and any(isinstance(r, NoScriptError) for r in results):
                    await self.load_scripts()
                    continue
                for result in results:
                    if isinstance(result, Exception):
                        raise result
                return results
        except RedisError as exc:
            raise CacheUnavailable(f"geo redis: {exc}") from exc
        raise AssertionError("unreachable")

    def _queue_script(self, pipe: Any, script: _Script, keys_: Sequence[str], *args: Any) -> None:
        if self._pipeline_sends_body:
            pipe.eval(script.source, len(keys_), *keys_, *args)
        else:
            pipe.evalsha(script.sha, len(keys_), *keys_, *args)

    async def _eval(self, script: _Script, keys_: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            try:
                return await self._redis.evalsha(script.sha, len(keys_), *keys_, *args)
            except NoScriptError:
                await self.load_scripts()
                return await self._redis.evalsha(script.sha, len(keys_), *keys_, *args)
        except RedisError as exc:
            raise CacheUnavailable(f"geo redis: {exc}") from exc

    # -- sightings (last location and live buckets) --------------------------

    def _queue_sighting(self, pipe: Any, s: Sighting, now_ms: int) -> None:
        if s.seen_ms >= now_ms - LOCATION_TTL_S * 1000:
            value = f"{s.seen_ms}|{s.hunt_id}|{_fmt(s.lat)}|{_fmt(s.lon)}|{_fmt(s.accuracy_m)}"
            self._queue_script(
                pipe, _LOCATION, (keys.location(s.player_id),),
                s.seen_ms, value, s.seen_ms + LOCATION_TTL_S * 1000,
            )  # fmt: skip
        if s.seen_ms >= now_ms - LIVE_WINDOW_S * 1000 and geo_indexable(s.lat):
            bucket = s.seen_ms // self._bucket_ms
            # The bucket's last sighting leaves the window LIVE_WINDOW_S after its end.
            expire_at = (bucket + 1) * self._bucket_ms + LIVE_WINDOW_S * 1000 + 1000
            self._queue_script(
                pipe, _LIVE, (keys.live(s.hunt_id, bucket), keys.live_seen(s.hunt_id, bucket)),
                _fmt(s.lon), _fmt(s.lat), s.player_id, s.seen_ms, expire_at,
            )  # fmt: skip

    async def record(self, sighting: Sighting, now_ms: int) -> None:
        """Records where a player was seen (skips what is already too old)."""
        if sighting.seen_ms >= now_ms - LIVE_WINDOW_S * 1000:
            await self._pipeline(lambda pipe: self._queue_sighting(pipe, sighting, now_ms))

    async def check_in(
        self, tag_id: str | None, hunt_id: str | None, sighting: Sighting, now_ms: int
    ) -> tuple[Versioned[Checkpoint] | None, Versioned[Hunt] | None]:
        """In one round trip: the cached tag and hunt (when asked; None: miss)
        and the sighting recorded."""
        tag_key = keys.tag(tag_id) if tag_id is not None else None
        hunt_key = keys.hunt(hunt_id) if hunt_id is not None else None

        def build(pipe: Any) -> None:
            if tag_key is not None:
                pipe.get(tag_key)
            if hunt_key is not None:
                pipe.get(hunt_key)
            self._queue_sighting(pipe, sighting, now_ms)

        results = await self._pipeline(build)
        tag = _versioned(results[0], decode_checkpoint) if tag_key is not None else None
        hunt = None
        if hunt_key is not None:
            hunt = _versioned(results[1 if tag_key is not None else 0], decode_hunt)
        return tag, hunt

    async def location(self, player_id: str) -> Sighting | None:
        results = await self._pipeline(lambda pipe: pipe.get(keys.location(player_id)))
        raw = results[0]
        if raw is None:
            return None
        seen_ms, hunt_id, lat, lon, accuracy = raw.split("|")
        return Sighting(hunt_id, player_id, float(lat), float(lon), float(accuracy), int(seen_ms))

    async def nearby_players(
        self, hunt_id: str, lat: float, lon: float, radius_m: float, count: int, now_ms: int
    ) -> list[PlayerSeen]:
        """Players of the hunt seen at or after now - 60 s within about `radius_m`
        (the caller filters by exact distance)."""
        cutoff = now_ms - LIVE_WINDOW_S * 1000
        buckets = range(now_ms // self._bucket_ms, cutoff // self._bucket_ms - 1, -1)
        bucket_keys: list[str] = []
        for bucket in buckets:
            bucket_keys.append(keys.live(hunt_id, bucket))
            bucket_keys.append(keys.live_seen(hunt_id, bucket))
        raw = await self._eval(
            _NEARBY_PLAYERS,
            bucket_keys,
            (_fmt(lon), _fmt(lat), _fmt(radius_m * _SEARCH_SLACK + _SEARCH_SLACK_M), cutoff,
             min(count, _MAX_SEARCH_COUNT)),
        )  # fmt: skip
        return [
            PlayerSeen(raw[i], float(raw[i + 2]), float(raw[i + 1])) for i in range(0, len(raw), 3)
        ]

    # -- catalog entries -----------------------------------------------------

    def _queue_versioned(self, pipe: Any, key: str, version: int, payload: str) -> None:
        ttl = self._catalog_ttl_ms if payload else self._negative_ttl_ms
        self._queue_script(pipe, _VERSIONED_SET, (key,), version, f"{version}|{payload}", ttl)

    async def put_catalog(
        self,
        tags: Sequence[tuple[str, Versioned[Checkpoint]]] = (),
        hunts: Sequence[tuple[str, Versioned[Hunt]]] = (),
    ) -> None:
        """Writes tag and hunt entries through (an older version never wins)."""

        def build(pipe: Any) -> None:
            for tag_id, entry in tags:
                payload = encode_checkpoint(entry.value) if entry.value is not None else ""
                self._queue_versioned(pipe, keys.tag(tag_id), entry.version, payload)
            for hunt_id, entry in hunts:
                payload = encode_hunt(entry.value) if entry.value is not None else ""
                self._queue_versioned(pipe, keys.hunt(hunt_id), entry.version, payload)

        if tags or hunts:
            await self._pipeline(build)

    async def hunt(self, hunt_id: str) -> Versioned[Hunt] | None:
        results = await self._pipeline(lambda pipe: pipe.get(keys.hunt(hunt_id)))
        return _versioned(results[0], decode_hunt)

    # -- checkpoint geo sets -------------------------------------------------

    async def nearby_checkpoints(
        self, hunt_id: str, lat: float, lon: float, radius_m: float, count: int
    ) -> list[Checkpoint] | None:
        """Candidate checkpoints within about `radius_m`; None when the hunt's
        set is missing and must be rebuilt."""
        raw = await self._eval(
            _NEARBY_CHECKPOINTS,
            (keys.checkpoints(hunt_id), keys.checkpoint_info(hunt_id)),
            (_fmt(lon), _fmt(lat), _fmt(radius_m * _SEARCH_SLACK + _SEARCH_SLACK_M),
             min(count, _MAX_SEARCH_COUNT)),
        )  # fmt: skip
        if raw is None:
            return None
        return [decode_checkpoint(text) for text in raw if text is not None]

    async def store_checkpoints(self, hunt_id: str, cps: CheckpointSet) -> None:
        polar: list[str] = []
        geo_args: list[Any] = []
        info_args: list[str] = []
        for cp in cps.checkpoints:
            if geo_indexable(cp.lat):
                geo_args += (_fmt(cp.lon), _fmt(cp.lat), cp.checkpoint_id)
            else:
                polar.append(cp.checkpoint_id)
            info_args += (cp.checkpoint_id, encode_checkpoint(cp))
        await self._eval(
            _STORE_CHECKPOINTS,
            (keys.checkpoints(hunt_id), keys.checkpoint_info(hunt_id)),
            (cps.version, self._catalog_ttl_ms, " ".join(polar), len(geo_args) // 3,
             *geo_args, *info_args),
        )  # fmt: skip

    async def invalidate_checkpoints(self, hunt_id: str, version: int) -> None:
        await self._eval(
            _INVALIDATE_CHECKPOINTS,
            (keys.checkpoints(hunt_id), keys.checkpoint_info(hunt_id)),
            (version, self._catalog_ttl_ms),
        )
