"""Prometheus metrics of one service, served as text on its metrics port.

Each service gets its own registry (so several services can run in one test
process); services add their own gauges and counters through `Metrics`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.004,
    0.008,
    0.016,
    0.032,
    0.064,
    0.128,
    0.256,
    0.512,
    1.0,
    2.5,
    5.0,
)


class Metrics:
    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry(auto_describe=True)
        self.rpc_latency = Histogram(
            "rpc_server_duration_seconds",
            "Server-side RPC latency, by method and status code.",
            ["method", "code"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.cache_requests = Counter(
            "cache_requests_total",
            "Cache lookups by cache, tier (l1, redis) and result (hit, miss).",
            ["cache", "tier", "result"],
            registry=self.registry,
        )
        self._server: WSGIServer | None = None  # /metrics, once serving

    def cache_hit(self, cache: str, tier: str) -> None:
        self.cache_requests.labels(cache, tier, "hit").inc()

    def cache_miss(self, cache: str, tier: str) -> None:
        self.cache_requests.labels(cache, tier, "miss").inc()

    def gauge(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
        return Gauge(name, doc, list(labels), registry=self.registry)

    def counter(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
        return Counter(name, doc, list(labels), registry=self.registry)

    def gauge_fn(self, name: str, doc: str, read: Callable[[], float]) -> Gauge:
        """A gauge whose value is read at scrape time."""
        gauge = Gauge(name, doc, registry=self.registry)
        gauge.set_function(read)
        return gauge

    def serve(self, listen: str) -> int:
        """Serves /metrics on `listen` (host:port; port 0 picks one). Returns the port."""
        if not listen or listen == "off":
            return 0
        host, _, port = listen.rpartition(":")
        server, _thread = start_http_server(
            int(port), addr=host or "127.0.0.1", registry=self.registry
        )
        self._server = server
        bound = server.server_address[1]
        log.info("metrics listening", extra={"metrics_port": bound})
        return bound

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
