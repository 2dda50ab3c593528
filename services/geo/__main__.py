"""Composition root of the geo service: read config, open pools, wire, run."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from libs import server as bootstrap
from services.geo.cache import CONTRACT, GeoCache
from services.geo.config import GeoConfig
from services.geo.server import GeoServicer, binding
from services.geo.service import Geo
from services.geo.store import GeoStore

MIGRATIONS = Path(__file__).parent / "migrations"


@contextlib.asynccontextmanager
async def running(
    config: GeoConfig, *, clock: Callable[[], float] = time.time
) -> AsyncIterator[bootstrap.Runtime]:
    """The service, started and serving, until the block exits. `clock` (Unix
    seconds) is what the service takes as now; tests move it."""
    async with bootstrap.Runtime("geo", config.common) as runtime:
        pool = await runtime.postgres(
            config.pg_dsn, "geo", MIGRATIONS,
            min_size=config.pg_pool_min, max_size=config.pg_pool_max,
        )  # fmt: skip
        redis = await runtime.redis(config.redis_url, CONTRACT, "GEO_REDIS_URL")
        cache = GeoCache(
            redis,
            catalog_ttl_s=config.catalog_ttl_s,
            negative_ttl_s=config.negative_ttl_s,
            live_bucket_s=config.live_bucket_s,
        )
        await cache.load_scripts()
        store = GeoStore(
            pool,
            runtime.metrics,
            timeout_s=config.pg_timeout_s,
            reads=await runtime.read_route(config.pg_read, pool),
        )
        geo = Geo(store, cache, config, runtime.metrics, clock=clock)
        runtime.warm("catalog of the hunts played", geo.warm)
        runtime.background("geo-tile-refresh", geo.refresh_loop)
        await runtime.serve(binding(GeoServicer(geo, config.common.max_message_bytes)))
        yield runtime


def main() -> None:
    bootstrap.main("geo", GeoConfig.from_env, running)


if __name__ == "__main__":
    main()
