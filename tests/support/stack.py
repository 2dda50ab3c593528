"""The whole system for end-to-end tests: four Redis servers of its own (from
the repo configs), the four services as real processes on free ports, one
throwaway Postgres database. Services can be killed and restarted; each
service's Redis can be stopped and started again on its port, flushed, or
filled to its maxmemory (the fault suite, tests/e2e/test_faults.py)."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import redis.asyncio as aioredis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from redis.exceptions import RedisError

from libs import rediskit
from libs.localinfra import RedisCluster, RedisServer, free_ports
from tests.support import infra
from tests.support.env import ADMIN_TOKEN, CLIENT_TOKEN, SERVICE_TOKEN, TOKENS, bearer
from tests.support.services import spawn, wait_serving
from treasure.geo.v1 import geo_pb2_grpc
from treasure.leaderboard.v1 import leaderboard_pb2_grpc
from treasure.scan.v1 import scan_pb2_grpc
from treasure.score.v1 import score_pb2_grpc

ORDER = ("geo", "score", "leaderboard", "scan")

#: Test channels reconnect at once when a service comes back (gRPC's default
#: reconnect backoff grows to minutes; a test must not wait on its own client).
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]


@dataclass(frozen=True)
class Fill:
    """What filling a Redis to maxmemory did."""

    maxmemory: int
    used_memory: int
    written_bytes: int
    evicted_keys: int
    seconds: float


class Stack:
    def __init__(self, workdir: Path, pg_dsn: str, **extra_env: str) -> None:
        self.workdir = workdir
        self.pg_dsn = pg_dsn
        self.extra_env = extra_env
        self.redis: dict[str, RedisServer | RedisCluster] = {}
        # Chosen in start(), once the Redis servers hold theirs: a port picked
        # earlier is not bound yet, and a cluster node could pick it too.
        self.ports: dict[str, int] = {}
        self.metrics_ports: dict[str, int] = {}
        self.processes: dict[str, subprocess.Popen] = {}
        self._channels: list[grpc.aio.Channel] = []

    def addr(self, service: str) -> str:
        return f"127.0.0.1:{self.ports[service]}"

    def env(self) -> dict[str, str]:
        env = dict(TOKENS)
        env.update({"SHUTDOWN_GRACE_S": "3", "STARTUP_TIMEOUT_S": "20", "LOG_LEVEL": "INFO"})
        for name in ORDER:
            prefix = name.upper()
            env[f"{prefix}_GRPC_LISTEN"] = self.addr(name)
            env[f"{prefix}_METRICS_LISTEN"] = f"127.0.0.1:{self.metrics_ports[name]}"
            env[f"{prefix}_REDIS_URL"] = self.redis[name].url
            env[f"{prefix}_SERVICE_ADDR"] = self.addr(name)
            if name != "leaderboard":
                env[f"{prefix}_PG_DSN"] = self.pg_dsn
        env.update(self.extra_env)
        return env

    async def start(self) -> Stack:
        self.workdir.mkdir(parents=True, exist_ok=True)
        # Side by side: a Redis Cluster takes about 2 s to agree it is whole.
        started = await asyncio.gather(
            *(asyncio.to_thread(infra.start_redis, n, self.workdir / f"redis-{n}") for n in ORDER),
            return_exceptions=True,
        )
        for name, server in zip(ORDER, started, strict=True):
            if not isinstance(server, BaseException):
                self.redis[name] = server  # stop() stops it, whatever failed
        for server in started:
            if isinstance(server, BaseException):
                raise server
        ports = free_ports(2 * len(ORDER))
        self.ports = dict(zip(ORDER, ports[: len(ORDER)], strict=True))
        self.metrics_ports = dict(zip(ORDER, ports[len(ORDER) :], strict=True))
        for name in ORDER:
            self._spawn(name)
        await asyncio.gather(*(self._wait_serving(n) for n in ORDER))
        return self

    async def _wait_serving(self, name: str) -> None:
        """Returns once the service is SERVING; else says why it is not (its
        exit status and the end of its log)."""
        try:
            await wait_serving(self.addr(name), 30)
        except TimeoutError as exc:
            status = self.processes[name].poll()
            tail = "\n".join(self.log(name).splitlines()[-15:])
            raise TimeoutError(
                f"{name} on {self.addr(name)} not SERVING after 30s "
                f"({'running' if status is None else f'exited {status}'}); its log ends:\n{tail}"
            ) from exc

    def _spawn(self, name: str) -> None:
        self.processes[name] = spawn(name, self.env(), self.workdir / f"{name}.log")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        process = self.processes[name]
        process.send_signal(sig)
        process.wait(30)

    async def stop_service(self, name: str) -> None:
        """SIGTERM (graceful shutdown) and wait for the process to end."""
        process = self.processes[name]
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            await asyncio.to_thread(process.wait, 30)

    async def restart(self, name: str) -> None:
        if self.processes[name].poll() is None:
            self.kill(name, signal.SIGTERM)
        self._spawn(name)
        await self._wait_serving(name)

    def pids(self) -> dict[str, int]:
        """The pid of each service process."""
        return {name: process.pid for name, process in self.processes.items()}

    def exited(self) -> dict[str, int]:
        """Services whose process has ended, with its exit status."""
        return {
            name: code
            for name, process in self.processes.items()
            if (code := process.poll()) is not None
        }

    async def health(self, timeout_s: float = 2.0) -> dict[str, str]:
        """Each service's grpc.health.v1 status (or the error) right now."""
        statuses: dict[str, str] = {}
        for name in ORDER:
            async with grpc.aio.insecure_channel(self.addr(name)) as channel:
                try:
                    reply = await health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(), timeout=timeout_s
                    )
                    statuses[name] = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
                except grpc.aio.AioRpcError as err:
                    statuses[name] = err.code().name
        return statuses

    # -- each service's Redis ----------------------------------------------------

    def redis_nodes(self, name: str) -> list[RedisServer]:
        """The redis-server processes of a service's Redis (one, or a cluster's masters)."""
        server = self.redis[name]
        return list(server.nodes) if isinstance(server, RedisCluster) else [server]

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

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def channel(self, service: str) -> grpc.aio.Channel:
        channel = grpc.aio.insecure_channel(self.addr(service), options=CHANNEL_OPTIONS)
        self._channels.append(channel)
        return channel

    def scan(self) -> scan_pb2_grpc.ScanServiceStub:
        return scan_pb2_grpc.ScanServiceStub(self.channel("scan"))

    def geo(self) -> geo_pb2_grpc.GeoServiceStub:
        return geo_pb2_grpc.GeoServiceStub(self.channel("geo"))

    def score(self) -> score_pb2_grpc.ScoreServiceStub:
        return score_pb2_grpc.ScoreServiceStub(self.channel("score"))

    def leaderboard(self) -> leaderboard_pb2_grpc.LeaderboardServiceStub:
        return leaderboard_pb2_grpc.LeaderboardServiceStub(self.channel("leaderboard"))

    async def stop(self, keep_files: bool = False) -> None:
        for channel in self._channels:
            await channel.close()
        for name in reversed(ORDER):
            process = self.processes.get(name)
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                await asyncio.to_thread(process.wait, 15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for server in self.redis.values():
            server.stop()
        if not keep_files:
            shutil.rmtree(self.workdir, ignore_errors=True)


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
