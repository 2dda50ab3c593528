"""What the geo service does, independent of gRPC: the cache tiers, CheckIn,
locations, nearby queries and the tile view.

Tiers of the catalog (tags and hunts): an in-process L1 (`TtlCache`, bounded in
entries, a few seconds), then Redis, then Postgres, with single-flight per key
so a burst of misses costs one query. Catalog writes go to Postgres first and
are then written through to Redis and this process's L1 (other replicas'
L1s converge within the L1 TTL). Cached entries carry their catalog version,
so a slow reader never puts an older copy over a newer one.

Redis being down degrades the catalog reads to Postgres (logged); live players
and last locations live only in Redis, so those calls fail UNAVAILABLE.

Why this module exists beside server.py/store.py/cache.py: the tier logic is
the service's behaviour, and keeping it out of the servicer leaves server.py
with only validation and proto mapping.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable
from datetime import UTC, datetime
from typing import Any

from libs import errors
from libs.cache import MISSING, SingleFlight, TtlCache
from libs.geometry import distance_m
from libs.metrics import Metrics
from services.geo.cache import CacheUnavailable, GeoCache, Versioned
from services.geo.config import GeoConfig
from services.geo.model import (
    LOCATION_TTL_S,
    WARM_LEAD,
    CheckInResult,
    Checkpoint,
    CheckpointInput,
    CheckpointSet,
    Hunt,
    HuntChanges,
    HuntNotFound,
    NearbyCheckpoint,
    NearbyPlayer,
    NewHunt,
    Sighting,
    TagStatus,
    TileRead,
    TileRefresh,
    allowed_m,
)
from services.geo.store import GeoStore
from services.geo.tile_cache import TileCache

log = logging.getLogger(__name__)

_NEARBY_SLACK = 8  # extra candidates asked of Redis before the exact distance filter


def _put_newer(cache: TtlCache[Any, Versioned[Any]], key: Hashable, entry: Versioned[Any]) -> None:
    current = cache.get(key)
    if current is MISSING or current.version <= entry.version:
        cache.put(key, entry)


class _Counters:
    """Pre-bound cache hit/miss counters (no label lookup per call)."""

    def __init__(self, metrics: Metrics, cache: str, tiers: tuple[str, ...]) -> None:
        self.hit = {t: metrics.cache_requests.labels(cache, t, "hit") for t in tiers}
        self.miss = {t: metrics.cache_requests.labels(cache, t, "miss") for t in tiers}


class Geo:
    """The geo service's behaviour. `clock` gives Unix seconds."""

    def __init__(
        self,
        store: GeoStore,
        cache: GeoCache,
        config: GeoConfig,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._cache = cache
        self._clock = clock
        self._tags: TtlCache[str, Versioned[Checkpoint]] = TtlCache(
            config.l1_entries, config.l1_ttl_s
        )
        self._hunts: TtlCache[str, Versioned[Hunt]] = TtlCache(config.l1_entries, config.l1_ttl_s)
        self._tiles = TileCache(
            config.tile_cache_bytes, config.tile_cache_entries, config.tile_cache_max_tile_bytes
        )
        #: Carrying the cached tiles over to a newer refresh of the view (or None).
        self._tile_carry: asyncio.Task[None] | None = None
        self._view_poll_s = config.tile_view_poll_s
        self._l1_entries = config.l1_entries
        self._tag_flight: SingleFlight[str, Versioned[Checkpoint]] = SingleFlight()
        self._hunt_flight: SingleFlight[str, Versioned[Hunt]] = SingleFlight()
        self._set_flight: SingleFlight[str, CheckpointSet] = SingleFlight()
        self._tile_flight: SingleFlight[tuple[str, int, int], TileRead] = SingleFlight()
        self._refresh_every_s = config.tile_refresh_s
        self._refresh_timeout_s = config.tile_refresh_timeout_s
        self._view_refreshed_at = 0.0
        self._tag_counts = _Counters(metrics, "tag", ("l1", "redis"))
        self._hunt_counts = _Counters(metrics, "hunt", ("l1", "redis"))
        self._set_counts = _Counters(metrics, "checkpoint_set", ("redis",))
        self._tile_counts = _Counters(metrics, "tile", ("l1",))
        self._tiles_carried = metrics.counter(
            "geo_tile_cache_carried_total",
            "Cached tiles checked against a newer refresh of the view: kept (unchanged) or dropped.",
            ("result",),
        )
        metrics.gauge_fn(
            "geo_tile_cache_bytes",
            "Bytes of tile data in the in-process tile cache (GEO_TILE_CACHE_BYTES bounds it).",
            lambda: self._tiles.bytes,
        )
        metrics.gauge_fn(
            "geo_tile_view_age_seconds",
            "Seconds since the tile view (geo.hunt_tile_mv) was last refreshed.",
            self._view_age,
        )

    def now(self) -> float:
        return self._clock()

    # -- catalog: hunts -----------------------------------------------------

    async def create_hunt(self, new: NewHunt) -> Hunt:
        hunt = await self._store.create_hunt(new)
        await self._publish_hunt(hunt)
        return hunt

    async def update_hunt(self, hunt_id: str, changes: HuntChanges) -> Hunt:
        hunt = await self._store.update_hunt(hunt_id, changes)
        await self._publish_hunt(hunt)
        return hunt

    async def _publish_hunt(self, hunt: Hunt) -> None:
        entry = Versioned(hunt.version, hunt)
        _put_newer(self._hunts, hunt.hunt_id, entry)
        await self._write_through(hunts=[(hunt.hunt_id, entry)])

    async def hunt(self, hunt_id: str) -> Hunt | None:
        entry = self._hunts.get(hunt_id)
        if entry is MISSING:
            self._hunt_counts.miss["l1"].inc()
            entry = await self._hunt_flight.do(hunt_id, lambda: self._load_hunt(hunt_id))
        else:
            self._hunt_counts.hit["l1"].inc()
        return entry.value

    async def require_hunt(self, hunt_id: str) -> Hunt:
        hunt = await self.hunt(hunt_id)
        if hunt is None:
            raise HuntNotFound(hunt_id)
        return hunt

    async def _load_hunt(self, hunt_id: str) -> Versioned[Hunt]:
        entry = self._hunts.get(hunt_id)
        if entry is not MISSING:  # filled while this load was being set up
            return entry
        try:
            cached = await self._cache.hunt(hunt_id)
        except CacheUnavailable as exc:
            log.warning("hunt %s read without redis: %s", hunt_id, exc)
            cached = None
        if cached is not None:
            self._hunt_counts.hit["redis"].inc()
            _put_newer(self._hunts, hunt_id, cached)
            return cached
        self._hunt_counts.miss["redis"].inc()
        hunt = await self._store.get_hunt(hunt_id)
        loaded = Versioned(hunt.version if hunt is not None else 0, hunt)
        await self._write_through(hunts=[(hunt_id, loaded)])
        _put_newer(self._hunts, hunt_id, loaded)
        return loaded

    async def list_hunts(self, after: str, limit: int) -> list[Hunt]:
        return await self._store.list_hunts(after, limit)

    # -- catalog: checkpoints -----------------------------------------------

    async def upsert_checkpoint(self, cp_in: CheckpointInput) -> tuple[Checkpoint, bool]:
        cp, created, old_tag = await self._store.upsert_checkpoint(cp_in)
        tags = [(cp.tag_id, Versioned(cp.version, cp))]
        if old_tag is not None and old_tag != cp.tag_id:
            tags.append((old_tag, Versioned(cp.version, None)))  # the old tag resolves no more
        await self._publish_checkpoint(cp, tags)
        return cp, created

    async def deactivate_checkpoint(self, hunt_id: str, checkpoint_id: str) -> Checkpoint:
        cp = await self._store.deactivate_checkpoint(hunt_id, checkpoint_id)
        await self._publish_checkpoint(cp, [(cp.tag_id, Versioned(cp.version, cp))])
        return cp

    async def _publish_checkpoint(
        self, cp: Checkpoint, tags: list[tuple[str, Versioned[Checkpoint]]]
    ) -> None:
        for tag_id, entry in tags:
            _put_newer(self._tags, tag_id, entry)
        await self._write_through(tags=tags)
        try:
            await self._cache.invalidate_checkpoints(cp.hunt_id, cp.version)
        except CacheUnavailable as exc:
            log.error("checkpoint set of hunt %s not invalidated: %s", cp.hunt_id, exc)

    async def list_checkpoints(
        self, hunt_id: str, *, include_inactive: bool, after: str, limit: int
    ) -> list[Checkpoint]:
        return await self._store.list_checkpoints(
            hunt_id, include_inactive=include_inactive, after=after, limit=limit
        )

    async def _write_through(
        self,
        tags: list[tuple[str, Versioned[Checkpoint]]] | None = None,
        hunts: list[tuple[str, Versioned[Hunt]]] | None = None,
    ) -> None:
        try:
            await self._cache.put_catalog(tags or (), hunts or ())
        except CacheUnavailable as exc:
            log.error("catalog entries not written to redis: %s", exc)

    # -- warm start -----------------------------------------------------------

    async def warm(self) -> str:
        """Fills both tiers with what CheckIn and NearbyCheckpoints need for the
        hunts played now or within `WARM_LEAD` (hunts, every tag, the active
        checkpoint sets), within the L1 bound; the runtime calls it before
        SERVING. Says what it loaded. Redis being down leaves L1 warm."""
        now = datetime.fromtimestamp(self._clock(), UTC)
        played = await self._store.played_catalog(now, WARM_LEAD, self._l1_entries)
        hunts = [(hunt.hunt_id, Versioned(hunt.version, hunt)) for hunt, _, _ in played]
        tags = [(cp.tag_id, Versioned(cp.version, cp)) for _, _, cps in played for cp in cps]
        for hunt_id, hunt_entry in hunts:
            _put_newer(self._hunts, hunt_id, hunt_entry)
        for tag_id, tag_entry in tags:
            _put_newer(self._tags, tag_id, tag_entry)
        await self._write_through(tags=tags, hunts=hunts)
        for hunt, active, _ in played:
            try:
                await self._cache.store_checkpoints(hunt.hunt_id, active)
            except CacheUnavailable as exc:
                log.warning("checkpoint set of %s not stored: %s", hunt.hunt_id, exc)
        return f"{len(hunts)} hunts, {len(tags)} tags"

    # -- check-in -------------------------------------------------------------

    async def check_in(
        self,
        hunt_id: str,
        player_id: str,
        tag_id: str,
        lat: float,
        lon: float,
        accuracy_m: float,
        at_s: float,
    ) -> CheckInResult:
        """Resolves the tag (L1, Redis, Postgres), measures the distance and
        records the sighting; on an L1 miss the Redis lookups and the sighting
        share one round trip."""
        now_ms = int(self._clock() * 1000)
        sighting = Sighting(hunt_id, player_id, lat, lon, accuracy_m, min(int(at_s * 1000), now_ms))
        tag = self._tags.get(tag_id)
        hunt = self._hunts.get(hunt_id)
        if tag is MISSING or hunt is MISSING:
            try:
                cached_tag, cached_hunt = await self._cache.check_in(
                    tag_id if tag is MISSING else None,
                    hunt_id if hunt is MISSING else None,
                    sighting,
                    now_ms,
                )
            except CacheUnavailable as exc:
                log.warning("check-in without redis: %s", exc)
                cached_tag = cached_hunt = None
            if tag is MISSING:
                self._tag_counts.miss["l1"].inc()
                if cached_tag is not None:
                    self._tag_counts.hit["redis"].inc()
                    _put_newer(self._tags, tag_id, cached_tag)
                    tag = cached_tag
                else:
                    self._tag_counts.miss["redis"].inc()
                    tag = await self._tag_flight.do(tag_id, lambda: self._load_tag(tag_id))
            else:
                self._tag_counts.hit["l1"].inc()
            if hunt is MISSING and cached_hunt is not None:
                _put_newer(self._hunts, hunt_id, cached_hunt)
                hunt = cached_hunt
        else:
            self._tag_counts.hit["l1"].inc()
            try:
                await self._cache.record(sighting, now_ms)
            except CacheUnavailable as exc:
                log.warning("check-in sighting not recorded: %s", exc)

        cp: Checkpoint | None = tag.value
        hunt_value = await self.hunt(hunt_id) if hunt is MISSING else hunt.value
        if hunt_value is None:
            return CheckInResult(TagStatus.UNKNOWN_HUNT, None, None, 0.0, 0.0, False)
        if cp is None or cp.hunt_id != hunt_id:
            return CheckInResult(TagStatus.UNKNOWN, None, None, 0.0, 0.0, False)
        distance = distance_m(lat, lon, cp.lat, cp.lon)
        allowed = allowed_m(cp.radius_m, accuracy_m)
        return CheckInResult(
            TagStatus.FOUND if cp.active else TagStatus.INACTIVE,
            cp,
            hunt_value,
            distance,
            allowed,
            distance <= allowed,
        )

    async def _load_tag(self, tag_id: str) -> Versioned[Checkpoint]:
        """One Postgres read of the tag and its hunt, written through to both tiers."""
        entry = self._tags.get(tag_id)
        if entry is not MISSING:  # a load that just finished filled it
            return entry
        cp, hunt = await self._store.tag(tag_id)
        loaded = Versioned(cp.version if cp is not None else 0, cp)
        hunts = [(hunt.hunt_id, Versioned(hunt.version, hunt))] if hunt is not None else []
        await self._write_through(tags=[(tag_id, loaded)], hunts=hunts)
        _put_newer(self._tags, tag_id, loaded)
        for hunt_id, hunt_entry in hunts:
            _put_newer(self._hunts, hunt_id, hunt_entry)
        return loaded

    # -- locations ------------------------------------------------------------

    async def update_location(
        self,
        hunt_id: str,
        player_id: str,
        lat: float,
        lon: float,
        accuracy_m: float,
        at_s: float | None,
    ) -> None:
        await self.require_hunt(hunt_id)
        now_ms = int(self._clock() * 1000)
        seen_ms = now_ms if at_s is None else min(int(at_s * 1000), now_ms)
        await self._cache.record(
            Sighting(hunt_id, player_id, lat, lon, accuracy_m, seen_ms), now_ms
        )

    async def player_location(self, player_id: str) -> Sighting:
        sighting = await self._cache.location(player_id)
        now_ms = int(self._clock() * 1000)
        if sighting is None or sighting.seen_ms < now_ms - LOCATION_TTL_S * 1000:
            raise errors.NotFound(f"player {player_id} not seen in the last {LOCATION_TTL_S} s")
        return sighting

    async def nearby_players(
        self, hunt_id: str, lat: float, lon: float, radius_m: float, limit: int
    ) -> list[NearbyPlayer]:
        await self.require_hunt(hunt_id)
        now_ms = int(self._clock() * 1000)
        seen = await self._cache.nearby_players(
            hunt_id, lat, lon, radius_m, max(4 * limit, 200), now_ms
        )
        found = []
        for p in seen:
            d = distance_m(lat, lon, p.lat, p.lon)
            if d <= radius_m:
                found.append(NearbyPlayer(p.player_id, p.lat, p.lon, d))
        found.sort(key=lambda n: (n.distance_m, n.player_id))
        return found[:limit]

    async def nearby_checkpoints(
        self, hunt_id: str, lat: float, lon: float, radius_m: float, limit: int
    ) -> list[NearbyCheckpoint]:
        await self.require_hunt(hunt_id)
        try:
            candidates = await self._cache.nearby_checkpoints(
                hunt_id, lat, lon, radius_m, limit + _NEARBY_SLACK
            )
        except CacheUnavailable as exc:
            log.warning("nearby checkpoints of %s without redis: %s", hunt_id, exc)
            candidates = None
        if candidates is None:
            self._set_counts.miss["redis"].inc()
            rebuilt = await self._set_flight.do(hunt_id, lambda: self._rebuild_set(hunt_id))
            candidates = list(rebuilt.checkpoints)
        else:
            self._set_counts.hit["redis"].inc()
        found = []
        for cp in candidates:
            d = distance_m(lat, lon, cp.lat, cp.lon)
            if d <= radius_m:
                found.append(NearbyCheckpoint(cp, d))
        found.sort(key=lambda n: (n.distance_m, n.checkpoint.checkpoint_id))
        return found[:limit]

    async def _rebuild_set(self, hunt_id: str) -> CheckpointSet:
        cps = await self._store.active_checkpoints(hunt_id)
        if cps is None:
            raise HuntNotFound(hunt_id)
        try:
            await self._cache.store_checkpoints(hunt_id, cps)
        except CacheUnavailable as exc:
            log.warning("checkpoint set of %s not stored: %s", hunt_id, exc)
        return cps

    # -- tiles ----------------------------------------------------------------

    @staticmethod
    def check_cell(hunt: Hunt, x: int, y: int, field: str = "") -> None:
        """INVALID_ARGUMENT off the grid; `field` prefixes the fields named."""
        if x >= hunt.grid.columns:
            raise errors.InvalidArgument(
                f"{field}x", f"must be < {hunt.grid.columns} (the grid's columns)"
            )
        if y >= hunt.grid.rows:
            raise errors.InvalidArgument(
                f"{field}y", f"must be < {hunt.grid.rows} (the grid's rows)"
            )

    async def put_tile(
        self, hunt_id: str, x: int, y: int, data: bytes, version: int, content_type: str
    ) -> int:
        self.check_cell(await self.require_hunt(hunt_id), x, y)
        return await self._store.put_tile(hunt_id, x, y, data, version, content_type)

    async def get_tile(self, hunt_id: str, x: int, y: int) -> TileRead:
        """The tile as the view shows it; NotFound when it is not in the view."""
        self.check_cell(await self.require_hunt(hunt_id), x, y)
        read = self._tiles.get((hunt_id, x, y))
        if read is None:
            read = await self._read_cell((hunt_id, x, y))
        else:
            self._tile_counts.hit["l1"].inc()
        if read.tile is None:
            raise errors.NotFound(f"tile ({x}, {y}) of hunt {hunt_id} not found")
        return read

    async def get_tiles(self, hunt_id: str, cells: list[tuple[int, int]]) -> list[TileRead]:
        """Cells of one hunt as the view shows them (tile None: not in it), in
        the order asked: the cached ones at once, the others loaded together."""
        hunt = await self.require_hunt(hunt_id)
        for i, (x, y) in enumerate(cells):
            self.check_cell(hunt, x, y, field=f"cells[{i}].")
        found = [self._tiles.get((hunt_id, x, y)) for x, y in cells]
        if any(read is None for read in found) and await self._carried():
            found = [
                read or self._tiles.get((hunt_id, *cell))
                for read, cell in zip(found, cells, strict=True)
            ]
        missing = [cell for read, cell in zip(found, cells, strict=True) if read is None]
        self._tile_counts.hit["l1"].inc(len(cells) - len(missing))
        if missing:  # one query for them all
            self._tile_counts.miss["l1"].inc(len(missing))
            loaded = await self._store.get_tiles(
                hunt_id, missing, seen_refresh_s=self._view_refreshed_at
            )
            for (x, y), read in loaded.items():
                self._tiles.put((hunt_id, x, y), read)
            # One snapshot: every row is of the same refresh.
            self._note_refresh(next(iter(loaded.values())).refreshed_at.timestamp())
            found = [read or loaded[cell] for read, cell in zip(found, cells, strict=True)]
        return [read for read in found if read is not None]

    async def _read_cell(self, key: tuple[str, int, int]) -> TileRead:
        """A cell the L1 did not answer: after the carry-over in progress, if
        any, else from Postgres (single-flight per cell)."""
        if await self._carried():
            read = self._tiles.get(key)
            if read is not None:
                self._tile_counts.hit["l1"].inc()
                return read
        self._tile_counts.miss["l1"].inc()
        return await self._tile_flight.do(key, lambda: self._load_tile(key))

    async def _carried(self) -> bool:
        """Waits for the carry-over in progress, if any (one query for every
        cached tile rather than one per tile); whether there was one. Never
        raises (asyncio.wait; the carry-over logs its own failure)."""
        if self._tile_carry is None:
            return False
        await asyncio.wait([self._tile_carry])
        return True

    async def _load_tile(self, key: tuple[str, int, int]) -> TileRead:
        read = await self._store.get_tile(*key, seen_refresh_s=self._view_refreshed_at)
        self._note_refresh(read.refreshed_at.timestamp())
        self._tiles.put(key, read)  # unless larger than GEO_TILE_CACHE_MAX_TILE_BYTES
        return read

    async def _carry_over(self) -> None:
        """Brings the cached tiles to the newest refresh of the view: per hunt,
        one query of the cached cells' versions; the unchanged ones are kept,
        the others dropped (read again when asked for). Runs until no newer
        refresh came meanwhile. On a failure the stale entries stay unused and
        each is read again on its own."""
        try:
            while True:
                epoch = self._tiles.epoch
                for hunt_id, cells in self._tiles.held(refreshed_before=epoch).items():
                    versions, refreshed_at = await self._store.tile_versions(
                        hunt_id, [(x, y) for _, x, y in cells], seen_refresh_s=epoch
                    )
                    kept = self._tiles.carry_over(
                        {(hunt_id, x, y): v for (x, y), v in versions.items()}, refreshed_at
                    )
                    self._tiles_carried.labels("kept").inc(kept)
                    self._tiles_carried.labels("dropped").inc(len(cells) - kept)
                    self._note_refresh(refreshed_at.timestamp(), carry=False)
                if self._tiles.epoch <= epoch:
                    return
        except Exception as error:  # noqa: BLE001 - logged; the tiles are read one by one
            log.warning("tile cache not carried over to the view's refresh: %r", error)
        finally:
            self._tile_carry = None

    async def refresh_tiles(self) -> TileRefresh:
        started = time.monotonic()
        result = await self._store.refresh_tiles(self._refresh_timeout_s)
        self._note_refresh(result.refreshed_at.timestamp())
        if result.refreshed:
            log.info(
                "tile view refreshed at %s in %.3fs",
                result.refreshed_at.isoformat(),
                time.monotonic() - started,
            )
        else:
            log.info(
                "tile view not refreshed (another replica holds the lock); last refresh %s",
                result.refreshed_at.isoformat(),
            )
        return result

    async def refresh_loop(self) -> None:
        """Reads the view's refresh time every GEO_TILE_VIEW_POLL_S, so a
        refresh by another replica reaches this process's tile cache within
        that; and refreshes the view whenever it is older than the interval
        (whoever refreshed it last), so replicas share one schedule, trying
        again no sooner than one interval after a try."""
        next_try = 0.0
        while True:
            last = (await self._store.last_refresh()).timestamp()
            self._note_refresh(last)
            if self._clock() - last >= self._refresh_every_s and time.monotonic() >= next_try:
                next_try = time.monotonic() + self._refresh_every_s
                await self.refresh_tiles()
            await asyncio.sleep(self._view_poll_s)

    def _note_refresh(self, at: float, carry: bool = True) -> None:
        """A refresh of the view at `at` (Unix s) was seen: the newest so far
        makes the cached tiles stale, and (`carry`) starts carrying them over."""
        if at > self._view_refreshed_at:
            self._view_refreshed_at = at
            self._tiles.epoch = at
            if carry and self._tile_carry is None and len(self._tiles):
                self._tile_carry = asyncio.ensure_future(self._carry_over())

    def _view_age(self) -> float:
        if not self._view_refreshed_at:
            return float("nan")
        return max(0.0, self._clock() - self._view_refreshed_at)
