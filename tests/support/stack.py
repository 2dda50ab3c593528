"""The whole system for end-to-end tests: four Redis servers of its own (from
the repo configs), the four services as real processes on free ports, one
throwaway Postgres database. Services can be killed and restarted."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
from pathlib import Path

import grpc

from libs.localinfra import RedisCluster, RedisServer, free_port
from tests.support.env import ADMIN_TOKEN, CLIENT_TOKEN, SERVICE_TOKEN, TOKENS, bearer
from tests.support.services import spawn, wait_serving
from treasure.geo.v1 import geo_pb2_grpc
from treasure.leaderboard.v1 import leaderboard_pb2_grpc
from treasure.scan.v1 import scan_pb2_grpc
from treasure.score.v1 import score_pb2_grpc

ORDER = ("geo", "score", "leaderboard", "scan")


class Stack:
    def __init__(self, workdir: Path, pg_dsn: str, **extra_env: str) -> None:
        self.workdir = workdir
        self.pg_dsn = pg_dsn
        self.extra_env = extra_env
        self.redis: dict[str, RedisServer | RedisCluster] = {}
        self.ports = {name: free_port() for name in ORDER}
        self.metrics_ports = {name: free_port() for name in ORDER}
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
        from tests.conftest import start_redis

        for name in ORDER:
            self.redis[name] = start_redis(name, self.workdir / f"redis-{name}")
        for name in ORDER:
            self._spawn(name)
        await asyncio.gather(*(wait_serving(self.addr(n), 30) for n in ORDER))
        return self

    def _spawn(self, name: str) -> None:
        self.processes[name] = spawn(name, self.env(), self.workdir / f"{name}.log")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        process = self.processes[name]
        process.send_signal(sig)
        process.wait(30)

    async def restart(self, name: str) -> None:
        if self.processes[name].poll() is None:
            self.kill(name, signal.SIGTERM)
        self._spawn(name)
        await wait_serving(self.addr(name), 30)

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def channel(self, service: str) -> grpc.aio.Channel:
        channel = grpc.aio.insecure_channel(self.addr(service))
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


CLIENT = bearer(CLIENT_TOKEN)
SERVICE = bearer(SERVICE_TOKEN)
ADMIN = bearer(ADMIN_TOKEN)
