"""Settings of the scan service, read from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from libs.config import Env, ServiceSettings


@dataclass(frozen=True)
class ScanConfig:
    common: ServiceSettings
    pg_dsn: str
    redis_url: str
    geo_addr: str
    score_addr: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> ScanConfig:
        """Reads every setting; ConfigError names each missing or invalid one."""
        env = Env(environ)
        common = ServiceSettings.read(env, "SCAN", grpc_port=50051, metrics_port=9101)
        common.require_peer_token(env)
        config = cls(
            common=common,
            pg_dsn=env.str("SCAN_PG_DSN"),
            redis_url=env.str("SCAN_REDIS_URL"),
            geo_addr=env.str("GEO_SERVICE_ADDR"),
            score_addr=env.str("SCORE_SERVICE_ADDR"),
        )
        env.finish()
        return config
