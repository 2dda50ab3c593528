"""The suite's infrastructure helpers (no fixtures: tests/conftest.py holds
those): where the repo and the test run's files are, the services, whether
each service's Redis is a Redis Cluster (`cluster_mode`), and flushing one.
The servers themselves, and the databases, are tools/localinfra.py's and
tools/stack.py's."""

from __future__ import annotations

import os
from pathlib import Path

import redis.asyncio as aioredis

from libs import rediskit

REPO = Path(__file__).resolve().parents[2]
RUN_DIR = REPO / ".run" / "test"
SERVICES = ("scan", "score", "leaderboard", "geo")


def cluster_mode() -> bool:
    """TEST_REDIS=cluster runs every service on its own 3-master Redis Cluster."""
    return os.environ.get("TEST_REDIS", "standalone") == "cluster"


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
