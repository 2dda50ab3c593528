"""Running our services for tests: in-process (port 0) or as real processes."""

from __future__ import annotations

import contextlib
import importlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from libs.server import Runtime
from tests.support.env import service_env

REPO = Path(__file__).resolve().parents[2]

CONFIG_CLASS = {
    "scan": "ScanConfig",
    "score": "ScoreConfig",
    "leaderboard": "LeaderboardConfig",
    "geo": "GeoConfig",
}


@contextlib.asynccontextmanager
async def in_process(service: str, **settings: str) -> AsyncIterator[Runtime]:
    """The service running in this process on a free port, until the block exits."""
    config_module = importlib.import_module(f"services.{service}.config")
    main_module = importlib.import_module(f"services.{service}.__main__")
    config = getattr(config_module, CONFIG_CLASS[service]).from_env(
        service_env(service.upper(), **settings)
    )
    async with main_module.running(config) as runtime:
        yield runtime


def spawn(service: str, env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """`python -m services.<service>` as a real process with `env` added."""
    full_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
    log = open(log_path, "ab")  # noqa: SIM115 - closed by the process's end
    return subprocess.Popen(
        [sys.executable, "-m", f"services.{service}"],
        cwd=REPO,
        env=full_env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


async def wait_serving(target: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{target} not SERVING after {timeout_s}s")
            await _sleep(0.05)


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)
