"""Settings of the score service, read from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from libs.config import Env, ServiceSettings


@dataclass(frozen=True)
class ScoreConfig:
    common: ServiceSettings
    pg_dsn: str
    redis_url: str
    leaderboard_addr: str
    #: Geo's catalog, asked whether the hunt of a player without a score exists.
    geo_addr: str
    #: Postgres pool bounds (the hot path holds a connection for one statement).
    pg_pool_min: int = 2
    pg_pool_max: int = 16
    #: Unlocks sent together in one statement at most (natural batching; 1: one each).
    unlock_batch: int = 32
    #: Lifetime of the hot-tier keys.
    hot_tier_ttl_s: float = 30.0
    #: Deadline of one hot-tier call (a write is tried twice).
    hot_tier_timeout_s: float = 0.005
    #: Deadline of the background retry of a write-through that failed twice.
    hot_tier_repair_timeout_s: float = 0.25
    #: Consecutive hot-tier failures that open the breaker, and how long it stays open.
    hot_tier_breaker_failures: int = 5
    hot_tier_breaker_s: float = 1.0
    #: Outbox relay: rows per SubmitScores, the longest a committed row waits,
    #: how long a wake-up lingers to fill a batch, the send deadline and backoff.
    relay_batch: int = 500
    relay_flush_s: float = 0.1
    relay_linger_s: float = 0.025
    relay_send_timeout_s: float = 2.0
    relay_backoff_min_s: float = 0.05
    relay_backoff_max_s: float = 5.0
    #: How often the outbox depth and oldest-row age gauges are refreshed.
    relay_stats_interval_s: float = 1.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> ScoreConfig:
        """Reads every setting; ConfigError names each missing or invalid one."""
        env = Env(environ)
        common = ServiceSettings.read(env, "SCORE", grpc_port=50052, metrics_port=9102)
        common.require_peer_token(env)
        config = cls(
            common=common,
            pg_dsn=env.str("SCORE_PG_DSN"),
            redis_url=env.str("SCORE_REDIS_URL"),
            leaderboard_addr=env.target("LEADERBOARD_SERVICE_ADDR"),
            geo_addr=env.target("GEO_SERVICE_ADDR"),
            pg_pool_min=env.int("SCORE_PG_POOL_MIN", cls.pg_pool_min, min=1, max=100),
            pg_pool_max=env.int("SCORE_PG_POOL_MAX", cls.pg_pool_max, min=2, max=200),
            unlock_batch=env.int("SCORE_UNLOCK_BATCH", cls.unlock_batch, min=1, max=1000),
            hot_tier_ttl_s=env.float("SCORE_HOT_TIER_TTL_S", cls.hot_tier_ttl_s, min=1, max=86400),
            hot_tier_timeout_s=env.float(
                "SCORE_HOT_TIER_TIMEOUT_MS", cls.hot_tier_timeout_s * 1000, min=1, max=10_000
            )
            / 1000,
            hot_tier_repair_timeout_s=env.float(
                "SCORE_HOT_TIER_REPAIR_TIMEOUT_MS",
                cls.hot_tier_repair_timeout_s * 1000,
                min=1,
                max=60_000,
            )
            / 1000,
            hot_tier_breaker_failures=env.int(
                "SCORE_HOT_TIER_BREAKER_FAILURES", cls.hot_tier_breaker_failures, min=1
            ),
            hot_tier_breaker_s=env.float(
                "SCORE_HOT_TIER_BREAKER_S", cls.hot_tier_breaker_s, min=0, max=600
            ),
            relay_batch=env.int("SCORE_RELAY_BATCH", cls.relay_batch, min=1, max=1000),
            relay_flush_s=env.float(
                "SCORE_RELAY_FLUSH_MS", cls.relay_flush_s * 1000, min=1, max=60_000
            )
            / 1000,
            relay_linger_s=env.float(
                "SCORE_RELAY_LINGER_MS", cls.relay_linger_s * 1000, min=0, max=60_000
            )
            / 1000,
            relay_send_timeout_s=env.float(
                "SCORE_RELAY_SEND_TIMEOUT_S", cls.relay_send_timeout_s, min=0.01, max=600
            ),
            relay_backoff_min_s=env.float(
                "SCORE_RELAY_BACKOFF_MIN_S", cls.relay_backoff_min_s, min=0.001, max=600
            ),
            relay_backoff_max_s=env.float(
                "SCORE_RELAY_BACKOFF_MAX_S", cls.relay_backoff_max_s, min=0.001, max=3600
            ),
            relay_stats_interval_s=env.float(
                "SCORE_RELAY_STATS_INTERVAL_S", cls.relay_stats_interval_s, min=0.01, max=3600
            ),
        )
        if config.pg_pool_min > config.pg_pool_max:
            env.problem("SCORE_PG_POOL_MIN must be <= SCORE_PG_POOL_MAX")
        if config.relay_backoff_min_s > config.relay_backoff_max_s:
            env.problem("SCORE_RELAY_BACKOFF_MIN_S must be <= SCORE_RELAY_BACKOFF_MAX_S")
        env.finish()
        return config
