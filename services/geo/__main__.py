"""Composition root of the geo service: read config, open pools, wire, run."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from libs import server as bootstrap
from services.geo.cache import CONTRACT
from services.geo.config import GeoConfig
from services.geo.server import GeoServicer, binding

MIGRATIONS = Path(__file__).parent / "migrations"


@contextlib.asynccontextmanager
async def running(config: GeoConfig) -> AsyncIterator[bootstrap.Runtime]:
    """The service, started and serving, until the block exits."""
    async with bootstrap.Runtime("geo", config.common) as runtime:
        await runtime.postgres(config.pg_dsn, "geo", MIGRATIONS)
        await runtime.redis(config.redis_url, CONTRACT, "GEO_REDIS_URL")
        await runtime.serve(binding(GeoServicer()))
        yield runtime


def main() -> None:
    bootstrap.main("geo", GeoConfig.from_env, running)


if __name__ == "__main__":
    main()
