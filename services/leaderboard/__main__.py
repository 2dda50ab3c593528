"""Composition root of the leaderboard service: read config, open pools, wire, run."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from libs import server as bootstrap
from services.leaderboard.cache import CONTRACT
from services.leaderboard.config import LeaderboardConfig
from services.leaderboard.server import LeaderboardServicer, binding

MIGRATIONS = Path(__file__).parent / "migrations"


@contextlib.asynccontextmanager
async def running(config: LeaderboardConfig) -> AsyncIterator[bootstrap.Runtime]:
    """The service, started and serving, until the block exits."""
    async with bootstrap.Runtime("leaderboard", config.common) as runtime:
        await runtime.redis(config.redis_url, CONTRACT, "LEADERBOARD_REDIS_URL")
        await runtime.serve(binding(LeaderboardServicer()))
        yield runtime


def main() -> None:
    bootstrap.main("leaderboard", LeaderboardConfig.from_env, running)


if __name__ == "__main__":
    main()
