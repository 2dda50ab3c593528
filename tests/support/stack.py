"""The whole system for end-to-end tests: tools.stack.Stack on free ports,
each service on a Redis Cluster of its own under TEST_REDIS=cluster (else one
Redis server), with the short-lived settings; plus what the fault suite
(tests/e2e/test_faults.py) does to each service's Redis: stop it and start it
again on its port, flush it, fill it to its maxmemory."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from libs import rediskit
from tests.support.env import ADMIN_TOKEN, CLIENT_TOKEN, SERVICE_TOKEN, bearer
from tests.support.infra import cluster_mode
from tools import stack
from tools.localinfra import RedisCluster, RedisServer


@dataclass(frozen=True)
class Fill:
    """What filling a Redis to maxmemory did."""

    maxmemory: int
    used_memory: int
    written_bytes: int
    evicted_keys: int
    seconds: float


class Stack(stack.Stack):
    """tools.stack.Stack as the e2e tests run it, with the fault suite's helpers."""

    def __init__(self, workdir: Path, pg_dsn: str, *, replicas: int = 1, **extra_env: str) -> None:
        super().__init__(workdir, pg_dsn, cluster=cluster_mode(), replicas=replicas, **extra_env)

    # -- the fault suite: each service's Redis ------------------------------

    @staticmethod
    def redis_client(node: RedisServer) -> aioredis.Redis:
        """A client of one node (for its INFO and CONFIG)."""
        return aioredis.Redis(host="127.0.0.1", port=node.port, socket_timeout=5)

    def _junk_client(self, name: str) -> aioredis.Redis | aioredis.RedisCluster:
        """A client that can write any key to a service's Redis (a cluster's
        client routes each key to its master)."""
        server = self.redis[name]
        if isinstance(server, RedisCluster):
            return rediskit.connect(server.url, socket_timeout=5)
        return self.redis_client(server)

    async def stop_redis(self, name: str) -> None:
        """Stops a service's Redis (every node); its data is gone (no persistence)."""
        for node in self.redis_nodes(name):
            await asyncio.to_thread(node.stop)

    async def start_redis(self, name: str) -> None:
        """Starts a service's Redis again on the same port(s) from the same config;
        returns once it answers (a cluster: once the cluster is ok again)."""
        nodes = self.redis_nodes(name)
        for node in nodes:
            await asyncio.to_thread(node.start)
        if isinstance(self.redis[name], RedisCluster):
            deadline = time.monotonic() + 30
            while not all([await _cluster_ok(node) for node in nodes]):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the {name} Redis Cluster did not come back")
                await asyncio.sleep(0.05)

    async def flushall(self, name: str) -> None:
        """FLUSHALL on every master of a service's Redis."""
        for node in self.redis_nodes(name):
            client = self.redis_client(node)
            try:
                await client.flushall()
            finally:
                await client.aclose()

    async def fill_redis(
        self,
        name: str,
        *,
        maxmemory: int | None = None,
        value_bytes: int = 1024,
        overshoot: float = 1.25,
    ) -> Fill:
        """Fills a service's Redis to its maxmemory with junk keys (no TTL), and
        writes `overshoot` times that, so the policy must evict while it fills.
        Small values leave it within about one value of its limit, so the
        service's own next writes make it evict too. `maxmemory` lowers the
        limit first (CONFIG SET, undone by `restore_maxmemory`) so the fill is
        quick. A Redis that refuses a write (OOM instead of evicting) raises
        redis's OutOfMemoryError."""
        started = time.monotonic()
        value = b"x" * value_bytes
        if maxmemory is not None:
            await self._config_set(name, "maxmemory", str(maxmemory))
        before = await self.redis_stats(name)
        written = 0
        junk = self._junk_client(name)
        try:
            i = 0
            while written < before["maxmemory"] * overshoot:
                pipe = junk.pipeline(transaction=False)
                for _ in range(512):
                    pipe.set(f"faults:junk:{i}", value)
                    i += 1
                    written += value_bytes
                await pipe.execute()
        finally:
            await junk.aclose()
        after = await self.redis_stats(name)
        return Fill(
            maxmemory=after["maxmemory"],
            used_memory=after["used_memory"],
            written_bytes=written,
            evicted_keys=after["evicted_keys"] - before["evicted_keys"],
            seconds=time.monotonic() - started,
        )

    async def press_redis(self, name: str, stop: asyncio.Event, value_bytes: int = 1024) -> None:
        """Keeps writing junk keys (about 3 MB/s) to a full Redis until `stop`
        is set, so it stays at maxmemory and keeps evicting while the service
        works on it. (An event, not cancellation: on Python 3.11 a cancel that
        races redis-py's socket timeout can be swallowed by its retry.)"""
        value = b"x" * value_bytes
        junk = self._junk_client(name)
        i = 0
        try:
            while not stop.is_set():
                pipe = junk.pipeline(transaction=False)
                for _ in range(32):
                    pipe.set(f"faults:press:{i}", value)
                    i += 1
                await pipe.execute()
                await asyncio.sleep(0.01)
        finally:
            await junk.aclose()

    async def redis_stats(self, name: str) -> dict[str, int]:
        """Keys, used_memory, maxmemory and evicted_keys of a service's Redis
        (summed over its masters)."""
        stats = {"keys": 0, "used_memory": 0, "maxmemory": 0, "evicted_keys": 0}
        for node in self.redis_nodes(name):
            client = self.redis_client(node)
            try:
                memory = await client.info("memory")
                stats["keys"] += int(await client.dbsize())
                stats["used_memory"] += int(memory["used_memory"])
                stats["maxmemory"] += int(memory["maxmemory"])
                stats["evicted_keys"] += int((await client.info("stats"))["evicted_keys"])
            finally:
                await client.aclose()
        return stats

    async def restore_maxmemory(self, name: str) -> None:
        """Sets maxmemory back to what the service's redis.conf says."""
        configured = _configured_maxmemory(self.redis_nodes(name)[0].config_file)
        await self._config_set(name, "maxmemory", configured)

    async def _config_set(self, name: str, setting: str, value: str) -> None:
        for node in self.redis_nodes(name):
            client = self.redis_client(node)
            try:
                await client.config_set(setting, value)
            finally:
                await client.aclose()


async def _cluster_ok(node: RedisServer) -> bool:
    client = aioredis.Redis(host="127.0.0.1", port=node.port, socket_timeout=2)
    try:
        info = await client.execute_command("CLUSTER INFO")  # parsed into a dict
    except (RedisError, OSError):
        return False
    finally:
        await client.aclose()
    if isinstance(info, dict):
        return info.get("cluster_state") in ("ok", b"ok")
    return "cluster_state:ok" in (info.decode() if isinstance(info, bytes) else str(info))


def _configured_maxmemory(config_file: Path) -> str:
    for line in config_file.read_text().splitlines():
        words = line.split()
        if len(words) == 2 and words[0] == "maxmemory":
            return words[1]
    raise ValueError(f"{config_file} sets no maxmemory")


CLIENT = bearer(CLIENT_TOKEN)
SERVICE = bearer(SERVICE_TOKEN)
ADMIN = bearer(ADMIN_TOKEN)
