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
            leaderboard_addr=env.str("LEADERBOARD_SERVICE_ADDR"),
        )
        env.finish()
        return config
