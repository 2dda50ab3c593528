"""Composition root of the score service: read config, open pools, wire, run."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from libs import server as bootstrap
from services.score.cache import CONTRACT
from services.score.config import ScoreConfig
from services.score.server import ScoreServicer, binding

MIGRATIONS = Path(__file__).parent / "migrations"


@contextlib.asynccontextmanager
async def running(config: ScoreConfig) -> AsyncIterator[bootstrap.Runtime]:
    """The service, started and serving, until the block exits."""
    async with bootstrap.Runtime("score", config.common) as runtime:
        await runtime.postgres(config.pg_dsn, "score", MIGRATIONS)
        await runtime.redis(config.redis_url, CONTRACT, "SCORE_REDIS_URL")
        await runtime.serve(binding(ScoreServicer()))
        yield runtime


def main() -> None:
    bootstrap.main("score", ScoreConfig.from_env, running)


if __name__ == "__main__":
    main()
