"""Settings of the geo service, read from the environment (and only here)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from libs.config import Env, ReadReplica, ServiceSettings


@dataclass(frozen=True)
class GeoConfig:
    common: ServiceSettings
    pg_dsn: str
    #: The read replica for the reads that tolerate bounded staleness (none by default).
    pg_read: ReadReplica
    redis_url: str
    #: Connections of the Postgres pool.
    pg_pool_min: int
    pg_pool_max: int
    #: Deadline of one ordinary Postgres statement.
    pg_timeout_s: float
    #: In-process (L1) cache of tags and hunts: entries and time to live.
    l1_entries: int
    l1_ttl_s: float
    #: Redis time to live of cached catalog entries (tags, hunts, checkpoint sets).
    catalog_ttl_s: float
    #: Redis time to live of "no such tag / hunt" answers.
    negative_ttl_s: float
    #: Width of one live-player time bucket (the 60 s window spans a few of them).
    live_bucket_s: int
    #: The tile view is refreshed when it is older than this (any replica may do it).
    tile_refresh_s: float
    #: Deadline of one REFRESH MATERIALIZED VIEW CONCURRENTLY.
    tile_refresh_timeout_s: float
    #: L1 tile cache (services/geo/tile_cache.py): the bytes of tile data it
    #: holds, its entries, and the largest tile it keeps.
    tile_cache_bytes: int
    tile_cache_entries: int
    tile_cache_max_tile_bytes: int
    #: How often the view's refresh time is read: the bound on how long a
    #: replica serves tiles of a refresh another replica has superseded.
    tile_view_poll_s: float

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> GeoConfig:
        """Reads every setting; ConfigError names each missing or invalid one."""
        env = Env(environ)
        common = ServiceSettings.read(env, "GEO", grpc_port=50054, metrics_port=9104)
        config = cls(
            common=common,
            pg_dsn=env.str("GEO_PG_DSN"),
            pg_read=ReadReplica.read(env, "GEO"),
            redis_url=env.str("GEO_REDIS_URL"),
            pg_pool_min=env.int("GEO_PG_POOL_MIN", 2, min=1, max=100),
            pg_pool_max=env.int("GEO_PG_POOL_MAX", 10, min=2, max=200),
            pg_timeout_s=env.float("GEO_PG_TIMEOUT_S", 5.0, min=0.01, max=600),
            l1_entries=env.int("GEO_L1_ENTRIES", 20_000, min=1, max=10_000_000),
            l1_ttl_s=env.float("GEO_L1_TTL_S", 5.0, min=0.01, max=3600),
            catalog_ttl_s=env.float("GEO_CATALOG_TTL_S", 300.0, min=1, max=86400),
            negative_ttl_s=env.float("GEO_NEGATIVE_TTL_S", 30.0, min=1, max=86400),
            live_bucket_s=env.int("GEO_LIVE_BUCKET_S", 20, min=1, max=60),
            tile_refresh_s=env.float("GEO_TILE_REFRESH_S", 300.0, min=1, max=7 * 86400),
            tile_refresh_timeout_s=env.float("GEO_TILE_REFRESH_TIMEOUT_S", 300.0, min=1, max=3600),
            tile_cache_bytes=env.int(
                "GEO_TILE_CACHE_BYTES", 64 * 1024 * 1024, min=0, max=64 * 1024 * 1024 * 1024
            ),
            tile_cache_entries=env.int("GEO_TILE_CACHE_ENTRIES", 100_000, min=1, max=10_000_000),
            tile_cache_max_tile_bytes=env.int(
                "GEO_TILE_CACHE_MAX_TILE_BYTES", 16 * 1024, min=0, max=256 * 1024
            ),
            tile_view_poll_s=env.float("GEO_TILE_VIEW_POLL_S", 1.0, min=0.01, max=300),
        )
        if config.pg_pool_min > config.pg_pool_max:
            env.problem("GEO_PG_POOL_MIN must be <= GEO_PG_POOL_MAX")
        env.finish()
        return config
