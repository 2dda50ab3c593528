"""Composition root of the score service: read config, open pools, wire, run."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from libs import server as bootstrap
from libs.telemetry import Telemetry
from services.geo.client import HuntDirectory
from services.leaderboard.client import LeaderboardClient
from services.score.cache import CONTRACT, HotTier
from services.score.config import ScoreConfig
from services.score.outbox import OutboxDelivery
from services.score.server import ScoreServicer, binding
from services.score.service import Scores
from services.score.store import PRIMERS, ScoreStore

MIGRATIONS = Path(__file__).parent / "migrations"


@contextlib.asynccontextmanager
async def running(
    config: ScoreConfig, *, telemetry: Telemetry | None = None
) -> AsyncIterator[bootstrap.Runtime]:
    """The service, started and serving, until the block exits. `telemetry`
    defaults to the one the settings describe (tests pass their own)."""
    async with bootstrap.Runtime("score", config.common, telemetry=telemetry) as runtime:
        pool = await runtime.postgres(
            config.pg_dsn,
            "score",
            MIGRATIONS,
            min_size=config.pg_pool_min,
            max_size=config.pg_pool_max,
            primers=PRIMERS,
        )
        redis = await runtime.redis(config.redis_url, CONTRACT, "SCORE_REDIS_URL")
        store = ScoreStore(pool, batch_size=config.unlock_batch, tracer=runtime.telemetry.tracer)
        hot = HotTier(
            redis,
            runtime.metrics,
            ttl_s=config.hot_tier_ttl_s,
            timeout_s=config.hot_tier_timeout_s,
            repair_timeout_s=config.hot_tier_repair_timeout_s,
            breaker_failures=config.hot_tier_breaker_failures,
            breaker_s=config.hot_tier_breaker_s,
        )
        tracer = runtime.telemetry.tracer
        relay = OutboxDelivery(
            store,
            LeaderboardClient(runtime.channel(config.leaderboard_addr)),
            tracer,
            runtime.metrics,
            batch=config.relay_batch,
            flush_s=config.relay_flush_s,
            linger_s=config.relay_linger_s,
            send_timeout_s=config.relay_send_timeout_s,
            backoff_min_s=config.relay_backoff_min_s,
            backoff_max_s=config.relay_backoff_max_s,
            stats_interval_s=config.relay_stats_interval_s,
        )
        runtime.background("score-outbox-delivery", relay.run)
        runtime.background("score-hot-tier-repair", hot.run_repairs)
        scores = Scores(
            store,
            hot,
            HuntDirectory(runtime.channel(config.geo_addr)),
            on_commit=relay.wake,
        )
        await runtime.serve(binding(ScoreServicer(scores)))
        yield runtime


def main() -> None:
    bootstrap.main("score", ScoreConfig.from_env, running)


if __name__ == "__main__":
    main()
