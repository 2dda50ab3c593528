"""Geo's pure pieces: the range rule, Redis GEO's latitude limit, cache encodings
and the settings."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from libs.config import ConfigError
from libs.geometry import distance_m
from services.geo.cache import (
    decode_checkpoint,
    decode_hunt,
    encode_checkpoint,
    encode_hunt,
)
from services.geo.config import GeoConfig
from services.geo.model import (
    Checkpoint,
    Grid,
    Hunt,
    HuntStatus,
    Tile,
    TileRead,
    allowed_m,
    geo_indexable,
)
from services.geo.tile_cache import ENTRY_OVERHEAD_BYTES, TileCache


def test_allowed_distance_adds_at_most_50_m_of_accuracy():
    assert allowed_m(25, 0) == 25
    assert allowed_m(25, 12.5) == 37.5
    assert allowed_m(25, 50) == 75
    assert allowed_m(25, 5000) == 75
    assert allowed_m(25, -3) == 25


def test_distance_edge_cases():
    assert distance_m(38.7, -9.1, 38.7, -9.1) == 0
    # Across the antimeridian, and across the pole: short, not half the planet.
    assert distance_m(0, 179.9999, 0, -179.9999) == pytest.approx(22.239, abs=1e-3)
    assert distance_m(89.9999, 0, 89.9999, 180) == pytest.approx(22.239, abs=1e-3)
    assert distance_m(90, 0, 90, 123) == pytest.approx(0, abs=1e-6)
    # Antipodes: half the circumference, no math domain error.
    assert distance_m(0, 0, 0, 180) == pytest.approx(20_015_115, rel=1e-6)


def test_redis_geo_latitude_limit():
    assert geo_indexable(85.05112878) and geo_indexable(-85.0)
    assert not geo_indexable(85.06) and not geo_indexable(-89.9)


def test_cache_encodings_round_trip():
    cp = Checkpoint("c1", "h1", "t1", "Arco", 38.7075, -9.1364, 25.5, 10, 5, True, 42)
    assert decode_checkpoint(encode_checkpoint(cp)) == cp
    at = datetime(2026, 5, 1, 12, 30, 15, 123456, tzinfo=UTC)
    hunt = Hunt(
        "h1", "Festival", at, at.replace(hour=18), HuntStatus.PUBLISHED,
        Grid(38.7, -9.14, 100.0, 10, 20), at, at, 7,
    )  # fmt: skip
    assert decode_hunt(encode_hunt(hunt)) == hunt


def test_config_defaults_and_problems():
    config = GeoConfig.from_env({"GEO_PG_DSN": "postgresql://x/y", "GEO_REDIS_URL": "redis://r"})
    assert config.tile_refresh_s == 300 and config.l1_ttl_s == 5
    assert (config.tile_cache_bytes, config.tile_cache_entries) == (64 * 1024 * 1024, 100_000)
    with pytest.raises(ConfigError) as err:
        GeoConfig.from_env(
            {"GEO_TILE_REFRESH_S": "0", "GEO_PG_POOL_MIN": "9", "GEO_PG_POOL_MAX": "3"}
        )
    message = str(err.value)
    for name in ("GEO_PG_DSN", "GEO_REDIS_URL", "GEO_TILE_REFRESH_S", "GEO_PG_POOL_MIN"):
        assert name in message


def test_the_tile_of_a_point_counts_metres_east_along_the_origins_parallel():
    grid = Grid(38.7, -9.165, 250.0, 20, 16)  # the demo's grid
    assert grid.tile_of(38.7, -9.165) == (0, 0)
    # 1 km north and 1 km east of the origin: tile (4, 4).
    north = 38.7 + 1000.5 / 111_195.08
    east = -9.165 + 1000.5 / (111_195.08 * math.cos(math.radians(38.7)))
    assert grid.tile_of(north, east) == (4, 4)
    assert grid.tile_of(38.7 - 1e-6, -9.165) == (0, -1)
    assert grid.covers(38.7139, -9.1394)  # Rossio
    assert not grid.covers(41.1406, -8.6132)  # Porto
    assert not grid.covers(38.6999, -9.1394)  # just south of the grid


def test_a_grid_across_the_antimeridian():
    grid = Grid(-17.0, 179.9, 1000.0, 30, 10)  # Fiji
    assert grid.covers(-16.99, 179.95)
    assert grid.covers(-16.99, -179.95)  # 0.15 deg east of the origin, across 180
    assert grid.tile_of(-16.99, -179.95)[0] == grid.tile_of(-16.99, 180.05)[0]
    assert not grid.covers(-16.99, 179.85)  # west of the origin


def _read(version: int | None, at: float, size: int = 10) -> TileRead:
    tile = None if version is None else Tile(version, "image/png", b"x" * size)
    return TileRead(tile, datetime.fromtimestamp(at, UTC))


def test_the_tile_cache_is_bounded_in_bytes_least_recently_used_first():
    cache = TileCache(
        max_bytes=3 * (ENTRY_OVERHEAD_BYTES + 100), max_entries=100, max_tile_bytes=200
    )
    for x in range(3):
        assert cache.put(("h", x, 0), _read(1, 10.0, size=100))
    assert cache.get(("h", 0, 0)) is not None  # (h, 1, 0) is now the least recently used
    assert cache.put(("h", 3, 0), _read(1, 10.0, size=100))
    assert [cache.get(("h", x, 0)) is not None for x in range(4)] == [True, False, True, True]
    assert cache.bytes == 3 * (ENTRY_OVERHEAD_BYTES + 100) and len(cache) == 3
    assert not cache.put(("h", 9, 0), _read(1, 10.0, size=201))  # larger than a tile may be
    # Absent tiles cost their entry: the entry bound holds them too.
    small = TileCache(max_bytes=10**9, max_entries=2, max_tile_bytes=200)
    for x in range(3):
        small.put(("h", x, 0), _read(None, 10.0))
    assert len(small) == 2 and small.get(("h", 0, 0)) is None


def test_a_cached_tile_answers_until_a_newer_refresh_and_is_carried_over_if_unchanged():
    cache = TileCache(max_bytes=10**6, max_entries=100, max_tile_bytes=100)
    cache.epoch = 10.0
    for x, version in ((0, 1), (1, 1), (2, None)):
        cache.put(("h", x, 0), _read(version, 10.0))
    cache.put(("other", 0, 0), _read(4, 10.0))
    assert cache.get(("h", 0, 0)) is not None and not cache.held(refreshed_before=10.0)
    assert not cache.put(("h", 0, 0), _read(0, 9.0))  # never an older read over a newer one

    cache.epoch = 20.0  # a newer refresh seen: nothing answers until carried over
    assert all(cache.get(("h", x, 0)) is None for x in range(3))
    assert {hunt: sorted(cells) for hunt, cells in cache.held(refreshed_before=20.0).items()} == {
        "h": [("h", 0, 0), ("h", 1, 0), ("h", 2, 0)], "other": [("other", 0, 0)]
    }  # fmt: skip
    refreshed = datetime.fromtimestamp(20.0, UTC)
    # In the new view: (0, 0) unchanged, (1, 0) at version 2, (2, 0) still absent.
    kept = cache.carry_over({("h", 0, 0): 1, ("h", 1, 0): 2, ("h", 2, 0): None}, refreshed)
    assert kept == 2
    assert cache.get(("h", 0, 0)) == _read(1, 20.0)
    assert cache.get(("h", 1, 0)) is None and ("h", 1, 0) not in cache.held(30.0).get("h", [])
    assert cache.get(("h", 2, 0)) == _read(None, 20.0)
    assert cache.get(("other", 0, 0)) is None  # its hunt not carried over yet
    assert cache.bytes == 3 * ENTRY_OVERHEAD_BYTES + 2 * 10
