"""Settings of the leaderboard service, read from the environment (only here)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from libs.config import Env, ServiceSettings


@dataclass(frozen=True)
class LeaderboardConfig:
    common: ServiceSettings
    redis_url: str
    score_addr: str
    #: Geo's catalog, asked whether a hunt without a board exists.
    geo_addr: str
    #: GetTop answers are kept in process this long (bounded staleness), and how many.
    top_cache_ms: int = 200
    top_cache_entries: int = 2048
    #: WatchTop pushes at most this many boards per second to each watcher.
    watch_rate: float = 4.0
    #: How often a watched board's change marker is polled (changes applied by
    #: other replicas); None: once per 1 / watch_rate.
    watch_poll_s: float | None = None
    #: Boards this process has seen are rebuilt this often (0 disables).
    reconcile_s: float = 600.0
    #: Deadline of one rebuild's StreamScores call.
    rebuild_timeout_s: float = 600.0
    #: Totals per StreamScores page (1..5000).
    rebuild_page_size: int = 2000
    #: The rebuild lock and temporary keys expire this long after the last page
    #: written, so a process that dies mid-rebuild leaves nothing behind.
    rebuild_lock_s: float = 30.0
    #: The RetryInfo sent while a board is missing or being rebuilt.
    retry_after_s: float = 1.0
    #: How many hunts this process remembers for reconciliation.
    max_hunts: int = 10_000

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> LeaderboardConfig:
        """Reads every setting; ConfigError names each missing or invalid one."""
        env = Env(environ)
        common = ServiceSettings.read(env, "LEADERBOARD", grpc_port=50053, metrics_port=9103)
        common.require_peer_token(env)
        config = cls(
            common=common,
            redis_url=env.str("LEADERBOARD_REDIS_URL"),
            score_addr=env.target("SCORE_SERVICE_ADDR"),
            geo_addr=env.target("GEO_SERVICE_ADDR"),
            top_cache_ms=env.int("LEADERBOARD_TOP_CACHE_MS", cls.top_cache_ms, min=1, max=250),
            top_cache_entries=env.int(
                "LEADERBOARD_TOP_CACHE_ENTRIES", cls.top_cache_entries, min=1, max=1_000_000
            ),
            watch_rate=env.float("LEADERBOARD_WATCH_RATE", cls.watch_rate, min=0.1, max=100.0),
            watch_poll_s=env.float("LEADERBOARD_WATCH_POLL_S", 0.0, min=0.0, max=3600) or None,
            reconcile_s=env.float(
                "LEADERBOARD_RECONCILE_S", cls.reconcile_s, min=0.0, max=86_400.0
            ),
            rebuild_timeout_s=env.float(
                "LEADERBOARD_REBUILD_TIMEOUT_S", cls.rebuild_timeout_s, min=1.0, max=7200.0
            ),
            rebuild_page_size=env.int(
                "LEADERBOARD_REBUILD_PAGE_SIZE", cls.rebuild_page_size, min=1, max=5000
            ),
            rebuild_lock_s=env.float(
                "LEADERBOARD_REBUILD_LOCK_S", cls.rebuild_lock_s, min=1.0, max=3600.0
            ),
            retry_after_s=env.float(
                "LEADERBOARD_RETRY_AFTER_S", cls.retry_after_s, min=0.01, max=60.0
            ),
            max_hunts=env.int("LEADERBOARD_MAX_HUNTS", cls.max_hunts, min=1, max=1_000_000),
        )
        env.finish()
        return config
