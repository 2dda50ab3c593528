"""The suite's infrastructure helpers (no fixtures: tests/conftest.py holds
those): where the repo and the test run's files are, the services and which
of them use Postgres, DSNs of per-test databases, and each service's Redis
(standalone or a Redis Cluster, see `cluster_mode`) started from the repo's
pinned config and flushed."""

from __future__ import annotations

import os
from pathlib import Path

import redis.asyncio as aioredis

from libs import rediskit
from libs.localinfra import RedisCluster, RedisServer

REPO = Path(__file__).resolve().parents[2]
RUN_DIR = REPO / ".run" / "test"
SERVICES_WITH_PG = ("scan", "score", "geo")
SERVICES = ("scan", "score", "leaderboard", "geo")


def migrations_of(service: str) -> Path:
    return REPO / "services" / service / "migrations"


def dsn_for(admin_dsn: str, database: str) -> str:
    base, _, _ = admin_dsn.rpartition("/")
    return f"{base}/{database}"


def cluster_mode() -> bool:
    """TEST_REDIS=cluster runs every service on its own 3-master Redis Cluster."""
    return os.environ.get("TEST_REDIS", "standalone") == "cluster"


def start_redis(service: str, workdir: Path) -> RedisServer | RedisCluster:
    config = REPO / "services" / service / "redis.conf"
    if cluster_mode():
        return RedisCluster(config, workdir).start()
    return RedisServer.on_free_port(config, workdir)


async def flush(url: str) -> None:
    """FLUSHALL on every master behind `url`."""
    client = rediskit.connect(url)
    try:
        if isinstance(client, aioredis.RedisCluster):
            await client.flushall(target_nodes=aioredis.RedisCluster.PRIMARIES)
        else:
            await client.flushall()
    finally:
        await client.aclose()
