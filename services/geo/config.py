"""Settings of the geo service, read from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from libs.config import Env, ServiceSettings


@dataclass(frozen=True)
class GeoConfig:
    common: ServiceSettings
    pg_dsn: str
    redis_url: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> GeoConfig:
        """Reads every setting; ConfigError names each missing or invalid one."""
        env = Env(environ)
        common = ServiceSettings.read(env, "GEO", grpc_port=50054, metrics_port=9104)
        config = cls(
            common=common,
            pg_dsn=env.str("GEO_PG_DSN"),
            redis_url=env.str("GEO_REDIS_URL"),
        )
        env.finish()
        return config
