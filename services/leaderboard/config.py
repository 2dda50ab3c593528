"""Settings of the leaderboard service, read from the environment."""

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

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> LeaderboardConfig:
        """Reads every setting; ConfigError names each missing or invalid one."""
        env = Env(environ)
        common = ServiceSettings.read(env, "LEADERBOARD", grpc_port=50053, metrics_port=9103)
        common.require_peer_token(env)
        config = cls(
            common=common,
            redis_url=env.str("LEADERBOARD_REDIS_URL"),
            score_addr=env.str("SCORE_SERVICE_ADDR"),
        )
        env.finish()
        return config
