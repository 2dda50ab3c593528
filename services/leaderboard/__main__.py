"""Composition root of the leaderboard service: read config, open Redis and
the score and geo channels, wire store -> rebuilder -> board -> watchers ->
servicer, run."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from libs import server as bootstrap
from services.geo.client import HuntDirectory
from services.geo.model import WARM_LEAD
from services.leaderboard.cache import CONTRACT, BoardStore
from services.leaderboard.config import LeaderboardConfig
from services.leaderboard.rebuild import Rebuilder
from services.leaderboard.server import LeaderboardServicer, binding
from services.leaderboard.service import Leaderboard
from services.leaderboard.watch import WatchHub
from services.score.client import ScoreClient


@contextlib.asynccontextmanager
async def running(config: LeaderboardConfig) -> AsyncIterator[bootstrap.Runtime]:
    """The service, started and serving, until the block exits."""
    async with bootstrap.Runtime("leaderboard", config.common) as runtime:
        redis = await runtime.redis(config.redis_url, CONTRACT, "LEADERBOARD_REDIS_URL")
        tracer = runtime.telemetry.tracer
        store = BoardStore(redis, retry_after_s=config.retry_after_s)
        rebuilder = Rebuilder(
            store,
            ScoreClient(runtime.channel(config.score_addr)),
            tracer,
            runtime.metrics,
            page_size=config.rebuild_page_size,
            timeout_s=config.rebuild_timeout_s,
            lock_s=config.rebuild_lock_s,
            reconcile_s=config.reconcile_s,
            max_hunts=config.max_hunts,
            retry_after_s=config.retry_after_s,
        )
        directory = HuntDirectory(runtime.channel(config.geo_addr))

        async def warm_boards() -> dict[str, int]:
            """The boards of the hunts played now or within the hour, rebuilt
            where missing before SERVING (a Redis that came back empty)."""
            played = await directory.played(datetime.now(UTC), WARM_LEAD)
            return {"played_hunts": len(played), "rebuilt": await rebuilder.warm(played)}

        runtime.warm("boards of played hunts", warm_boards)
        board = Leaderboard(
            store,
            rebuilder,
            directory,
            tracer,
            runtime.metrics,
            top_cache_ms=config.top_cache_ms,
            top_cache_entries=config.top_cache_entries,
            retry_after_s=config.retry_after_s,
        )
        hub = WatchHub(
            board, runtime.metrics, rate_per_s=config.watch_rate, poll_s=config.watch_poll_s
        )
        runtime.background("leaderboard-rebuilds", rebuilder.run)
        await runtime.serve(binding(LeaderboardServicer(board, hub)))
        try:
            yield runtime
        finally:
            hub.close()  # open watches end now, so shutdown does not wait out the grace


def main() -> None:
    bootstrap.main("leaderboard", LeaderboardConfig.from_env, running)


if __name__ == "__main__":
    main()
