"""Suite-wide fixtures: a throwaway Postgres database per test (cloned from a
migrated template), one Redis server per service started from the repo's
pinned configs (flushed before each test), and a check that no test leaves an
unhandled exception on the event loop. Servers are started, never skipped.
The helpers these use are in tests/support/infra.py (paths, flushing a Redis),
tools/localinfra.py (Postgres, databases) and tools/stack.py (a service's
Redis, the migrations): import them from there, never from this file."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.infra import RUN_DIR, SERVICES, cluster_mode, flush
from tools import stack
from tools.localinfra import (
    RedisCluster,
    RedisServer,
    create_database,
    drop_database,
    find_postgres,
    throwaway_database,
)


@pytest.fixture(scope="session")
def pg_admin_dsn() -> Iterator[str]:
    dsn, private = find_postgres(os.environ.get("PG_DSN", ""), RUN_DIR)
    yield dsn
    if private is not None:
        private.stop()


@pytest.fixture(scope="session")
async def pg_template(pg_admin_dsn: str) -> AsyncIterator[str]:
    """A database with every service's migrations applied, cloned per test."""
    name = f"thtest_tpl_{os.getpid()}"
    await stack.migrate(await create_database(pg_admin_dsn, name))
    yield name
    await drop_database(pg_admin_dsn, name)


@pytest.fixture
async def pg_dsn(pg_admin_dsn: str, pg_template: str) -> AsyncIterator[str]:
    """A fresh, migrated database for one test; dropped afterwards."""
    name = f"thtest_{os.getpid()}_{uuid.uuid4().hex[:10]}"
    async with throwaway_database(pg_admin_dsn, name, template=pg_template) as dsn:
        yield dsn


@pytest.fixture(scope="session")
def redis_servers() -> Iterator[dict[str, RedisServer | RedisCluster]]:
    """One Redis per service (or one Redis Cluster, see `cluster_mode`), from
    services/<name>/redis.conf, on free ports. Started side by side: a cluster
    takes about 2 s to agree it is whole (its rejoin delay), whatever its size."""
    servers: dict[str, RedisServer | RedisCluster] = {}
    try:
        with ThreadPoolExecutor(len(SERVICES)) as pool:
            starting = {
                service: pool.submit(
                    stack.start_redis,
                    service,
                    RUN_DIR / f"redis-{service}-{os.getpid()}",
                    cluster=cluster_mode(),
                )
                for service in SERVICES
            }
        for service, future in starting.items():
            if future.exception() is None:
                servers[service] = future.result()
        for future in starting.values():
            future.result()  # the first failure, once whatever started will be stopped
        yield servers
    finally:
        for server in servers.values():
            server.stop()
        for service in SERVICES:
            shutil.rmtree(RUN_DIR / f"redis-{service}-{os.getpid()}", ignore_errors=True)


@pytest.fixture
async def redis_urls(redis_servers: dict[str, RedisServer | RedisCluster]) -> dict[str, str]:
    """The per-service Redis URLs, each flushed for this test."""
    for server in redis_servers.values():
        await flush(server.url)
    return {name: server.url for name, server in redis_servers.items()}


@pytest.fixture(autouse=True)
async def _no_unhandled_loop_errors() -> AsyncIterator[None]:
    """An exception nobody handled on the loop fails the test that caused it."""
    loop = asyncio.get_running_loop()
    seen: list[dict] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    yield
    loop.set_exception_handler(previous)
    assert not seen, f"unhandled exceptions on the event loop: {seen}"
