"""Our services in tests, beyond tools/inprocess.py (in process) and
tools/stack.py (as processes): waiting until one is SERVING, and scraping
its metrics."""

from __future__ import annotations

import urllib.request

from tools import localinfra


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
