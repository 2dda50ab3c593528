"""Running our services for tests: in-process (port 0) or as real processes."""

from __future__ import annotations

import contextlib
import importlib
import os
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

from libs import localinfra
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
    if not await localinfra.wait_serving(target, timeout_s):
        raise TimeoutError(f"{target} not SERVING after {timeout_s}s")


def scrape_metrics(port: int) -> dict[str, float]:
    """A service's Prometheus metrics (blocking): each sample, by its name with
    labels (e.g. `scans_shed_total`, `scans_total{outcome="unlocked"}`)."""
    url = f"http://127.0.0.1:{port}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values
