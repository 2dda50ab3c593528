"""Composition root of the scan service: read config, open pools, wire, run."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from libs import server as bootstrap
from services.scan.cache import CONTRACT
from services.scan.config import ScanConfig
from services.scan.server import ScanServicer, binding

MIGRATIONS = Path(__file__).parent / "migrations"


@contextlib.asynccontextmanager
async def running(config: ScanConfig) -> AsyncIterator[bootstrap.Runtime]:
    """The service, started and serving, until the block exits."""
    async with bootstrap.Runtime("scan", config.common) as runtime:
        await runtime.postgres(config.pg_dsn, "scan", MIGRATIONS)
        await runtime.redis(config.redis_url, CONTRACT, "SCAN_REDIS_URL")
        await runtime.serve(binding(ScanServicer()))
        yield runtime


def main() -> None:
    bootstrap.main("scan", ScanConfig.from_env, running)


if __name__ == "__main__":
    main()
