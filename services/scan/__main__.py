"""Composition root of the scan service: read config, open pools, wire, run."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

from libs import server as bootstrap
from services.geo.client import GeoClient
from services.scan.cache import CONTRACT, ScanCache
from services.scan.config import ScanConfig
from services.scan.purge import LocationPurge
from services.scan.redrive import Redrive
from services.scan.server import ScanServicer, binding
from services.scan.service import FlowSettings, ScanFlow
from services.scan.store import PRIMERS, ScanStore
from services.score.client import ScoreClient

MIGRATIONS = Path(__file__).parent / "migrations"


@contextlib.asynccontextmanager
async def running(config: ScanConfig) -> AsyncIterator[bootstrap.Runtime]:
    """The service, started and serving, until the block exits."""
    async with bootstrap.Runtime("scan", config.common) as runtime:
        pool = await runtime.postgres(
            config.pg_dsn, "scan", MIGRATIONS, max_size=20, primers=PRIMERS
        )
        redis = await runtime.redis(config.redis_url, CONTRACT, "SCAN_REDIS_URL")
        store = ScanStore(
            pool,
            batch_size=config.pg_batch,
            tracer=runtime.telemetry.tracer,
            reads=await runtime.read_route(config.pg_read, pool),
        )
        cache = ScanCache(
            redis,
            rate_limit=config.rate_limit,
            rate_window_s=config.rate_window_s,
            pending_ttl_s=max(5.0, config.geo_timeout_s + config.score_timeout_s + 1.0),
            answer_ttl_s=config.idempotency_ttl_s,
            last_scan_ttl_s=min(86_400, config.location_retention_s),
        )
        flow = ScanFlow(
            store,
            cache,
            GeoClient(
                runtime.channel(config.geo_addr),
                timeout_s=config.geo_timeout_s,
                multiplexed=config.peer_streams,
            ),
            ScoreClient(
                runtime.channel(config.score_addr),
                timeout_s=config.score_timeout_s,
                multiplexed=config.peer_streams,
            ),
            runtime.metrics,
            FlowSettings(
                max_speed_mps=config.max_speed_mps,
                geo_timeout_s=config.geo_timeout_s,
                score_timeout_s=config.score_timeout_s,
                lease_s=config.lease_s,
                redis_timeout_s=config.redis_timeout_s,
                admission=config.admission(),
            ),
        )
        relay = Redrive(
            store,
            flow,
            runtime.telemetry.tracer,
            runtime.metrics,
            interval_s=config.relay_interval_s,
            batch=config.relay_batch,
            lease_s=config.lease_s,
        )
        runtime.background("scan-redrive", relay.run)
        purge = LocationPurge(
            store,
            cache,
            runtime.metrics,
            retention_s=config.location_retention_s,
            interval_s=config.purge_interval_s,
        )
        runtime.background("scan-location-purge", purge.run)
        await runtime.serve(
            binding(ScanServicer(flow, max_scan_age=timedelta(seconds=config.max_scan_age_s)))
        )
        yield runtime


def main() -> None:
    bootstrap.main("scan", ScanConfig.from_env, running)


if __name__ == "__main__":
    main()
