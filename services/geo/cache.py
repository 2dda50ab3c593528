"""The geo service's Redis: what it holds, the contract it must keep, and how.

Everything here can vanish at any time (allkeys-lru) and is rebuilt from
Postgres: the tag and hunt caches, the checkpoint geo set of each hunt, the
live-player time buckets and each player's last location (keys: see
`services.geo.keys`). Catalog entries carry the catalog version they were
read at; a write never replaces a newer version (a reader that loaded before
an admin write cannot overwrite what the write put there after its commit).

The Lua scripts are the `.lua` files beside this module, run by
`libs.rediskit.Script` (loaded at start; EVALSHA, or EVAL in a Redis Cluster
pipeline; NOSCRIPT handled there); each touches the keys of one hash tag, so
everything here also runs on Redis Cluster. Every call goes through one
`libs.rediskit.RedisGuard`: every Redis failure surfaces as
`CacheUnavailable`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from redis.exceptions import RedisError

from libs.rediskit import AnyRedis, Pipeline, RedisContract, RedisGuard, Script
from libs.rediskit import CacheUnavailable as CacheUnavailable  # what every failure here raises
from libs.timestamps import from_us, to_us
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

#: the Redis table of docs/ARCHITECTURE.md: checkpoint geo set per hunt, live players in time
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


_HERE = Path(__file__).parent
#: A tag or hunt entry, unless a newer version is cached.
_VERSIONED_SET = Script(_HERE / "versioned_set.lua")
#: A player's last location, unless a newer sighting is there.
_LOCATION = Script(_HERE / "location.lua")
#: A sighting in its live bucket.
_LIVE = Script(_HERE / "live.lua")
#: Players seen near a point in the live window.
_NEARBY_PLAYERS = Script(_HERE / "nearby_players.lua")
#: Candidate checkpoints near a point, or nil when the set must be rebuilt.
_NEARBY_CHECKPOINTS = Script(_HERE / "nearby_checkpoints.lua")
#: A hunt's checkpoint set, unless a newer (or the same, complete) one is there.
_STORE_CHECKPOINTS = Script(_HERE / "store_checkpoints.lua")
#: Drops a hunt's checkpoint set after a write, leaving its version as a marker.
_INVALIDATE_CHECKPOINTS = Script(_HERE / "invalidate_checkpoints.lua")

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
            "starts_at": to_us(hunt.starts_at),
            "ends_at": to_us(hunt.ends_at),
            "status": hunt.status.value,
            "grid": [g.origin_lat, g.origin_lon, g.tile_size_m, g.columns, g.rows],
            "created_at": to_us(hunt.created_at),
            "updated_at": to_us(hunt.updated_at),
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
        starts_at=from_us(d["starts_at"]),
        ends_at=from_us(d["ends_at"]),
        status=HuntStatus(d["status"]),
        grid=Grid(lat, lon, size, columns, rows),
        created_at=from_us(d["created_at"]),
        updated_at=from_us(d["updated_at"]),
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
        #: Any Redis error is CacheUnavailable; no budget but the client's socket timeout.
        self._guard = RedisGuard("geo redis", catch=(RedisError,))
        self._catalog_ttl_ms = int(catalog_ttl_s * 1000)
        self._negative_ttl_ms = int(negative_ttl_s * 1000)
        self._bucket_ms = live_bucket_s * 1000

    async def load_scripts(self) -> None:
        """Loads every script (at start, so the first calls meet no NOSCRIPT)."""

        async def load() -> None:
            for script in _SCRIPTS:
                await script.load(self._redis)

        await self._guard.call(load, op="load_scripts")

    async def _pipeline(self, build: Callable[[Pipeline], None]) -> list[Any]:
        """Runs the commands and scripts `build` queues in one round trip."""

        async def run() -> list[Any]:
            pipe = Pipeline(self._redis)
            build(pipe)
            return await pipe.execute()

        return await self._guard.call(run, op="pipeline")

    async def _eval(self, script: Script, keys_: Sequence[str], args: Sequence[Any]) -> Any:
        return await self._guard.call(lambda: script.run(self._redis, keys_, args), op=script.name)

    # -- sightings (last location and live buckets) --------------------------

    def _queue_sighting(self, pipe: Pipeline, s: Sighting, now_ms: int) -> None:
        if s.seen_ms >= now_ms - LOCATION_TTL_S * 1000:
            value = f"{s.seen_ms}|{s.hunt_id}|{_fmt(s.lat)}|{_fmt(s.lon)}|{_fmt(s.accuracy_m)}"
            pipe.script(
                _LOCATION, (keys.location(s.player_id),),
                (s.seen_ms, value, s.seen_ms + LOCATION_TTL_S * 1000),
            )  # fmt: skip
        if s.seen_ms >= now_ms - LIVE_WINDOW_S * 1000 and geo_indexable(s.lat):
            bucket = s.seen_ms // self._bucket_ms
            # The bucket's last sighting leaves the window LIVE_WINDOW_S after its end.
            expire_at = (bucket + 1) * self._bucket_ms + LIVE_WINDOW_S * 1000 + 1000
            pipe.script(
                _LIVE, (keys.live(s.hunt_id, bucket), keys.live_seen(s.hunt_id, bucket)),
                (_fmt(s.lon), _fmt(s.lat), s.player_id, s.seen_ms, expire_at),
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

        def build(pipe: Pipeline) -> None:
            if tag_key is not None:
                pipe.commands.get(tag_key)
            if hunt_key is not None:
                pipe.commands.get(hunt_key)
            self._queue_sighting(pipe, sighting, now_ms)

        results = await self._pipeline(build)
        tag = _versioned(results[0], decode_checkpoint) if tag_key is not None else None
        hunt = None
        if hunt_key is not None:
            hunt = _versioned(results[1 if tag_key is not None else 0], decode_hunt)
        return tag, hunt

    async def location(self, player_id: str) -> Sighting | None:
        results = await self._pipeline(lambda pipe: pipe.commands.get(keys.location(player_id)))
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

    def _queue_versioned(self, pipe: Pipeline, key: str, version: int, payload: str) -> None:
        ttl = self._catalog_ttl_ms if payload else self._negative_ttl_ms
        pipe.script(_VERSIONED_SET, (key,), (version, f"{version}|{payload}", ttl))

    async def put_catalog(
        self,
        tags: Sequence[tuple[str, Versioned[Checkpoint]]] = (),
        hunts: Sequence[tuple[str, Versioned[Hunt]]] = (),
    ) -> None:
        """Writes tag and hunt entries through (an older version never wins)."""

        def build(pipe: Pipeline) -> None:
            for tag_id, tag in tags:
                payload = encode_checkpoint(tag.value) if tag.value is not None else ""
                self._queue_versioned(pipe, keys.tag(tag_id), tag.version, payload)
            for hunt_id, hunt in hunts:
                payload = encode_hunt(hunt.value) if hunt.value is not None else ""
                self._queue_versioned(pipe, keys.hunt(hunt_id), hunt.version, payload)

        if tags or hunts:
            await self._pipeline(build)

    async def hunt(self, hunt_id: str) -> Versioned[Hunt] | None:
        results = await self._pipeline(lambda pipe: pipe.commands.get(keys.hunt(hunt_id)))
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
