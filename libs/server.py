"""Server bootstrap: what every service does to start, serve and stop.

A service's `__main__.py` builds a `Runtime`, asks it for Postgres, Redis and
peer channels (each checked and closed in order), starts background loops,
then `serve()`s its servicer. `Runtime` owns the order of shutdown:

    SIGTERM/SIGINT -> health NOT_SERVING -> in-flight calls finish within the
    grace period -> background loops stop -> channels, Redis and pools close
    -> spans flushed.

`main()` is the process entry point: config errors exit 2 naming every
setting, a start-up failure (e.g. a Redis breaking the contract) exits 1 with
a clear message, a clean shutdown exits 0. grpc.aio runs on uvloop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import asyncpg
import grpc
import uvloop
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from prometheus_client import Gauge
from redis.exceptions import RedisError

from libs import pg, rediskit
from libs.acceptors import Acceptors
from libs.auth import Authenticator, Role
from libs.channels import PeerChannel, open_channel
from libs.config import ConfigError, ReadReplica, ServiceSettings
from libs.logs import setup_logging
from libs.metrics import Metrics
from libs.pgreads import ReadRoute
from libs.rpc import Gate, ServiceHandlers
from libs.telemetry import Telemetry

log = logging.getLogger(__name__)


class StartupError(Exception):
    """The service cannot start; the message says why and what to change."""


@dataclass(frozen=True)
class Binding:
    """A servicer and how to serve it: its descriptor, the generated `add_*`
    function, the roles each of its methods accepts, the methods' gates
    (`libs.rpc.Gate`: refusing a call before it does any work) and the stream
    methods served as many calls of a unary method (`multiplexed`: stream ->
    unary, see libs.rpc), by short name."""

    descriptor: ServiceDescriptor
    add_to_server: Callable[[Any, grpc.aio.Server], None]
    servicer: Any
    roles: Mapping[str, frozenset[Role]]
    gates: Mapping[str, Gate] = field(default_factory=dict)
    multiplexed: Mapping[str, str] = field(default_factory=dict)

    def full_roles(self) -> dict[str, frozenset[Role]]:
        methods = {m.name for m in self.descriptor.methods}
        missing = methods - set(self.roles)
        extra = set(self.roles) - methods
        if missing or extra:
            raise StartupError(
                f"{self.descriptor.full_name}: roles must be declared for every method "
                f"(missing {sorted(missing)}, unknown {sorted(extra)})"
            )
        return {f"/{self.descriptor.full_name}/{name}": roles for name, roles in self.roles.items()}

    def full_gates(self) -> dict[str, Gate]:
        unknown = set(self.gates) - {m.name for m in self.descriptor.methods}
        if unknown:
            raise StartupError(
                f"{self.descriptor.full_name}: gates of unknown methods {sorted(unknown)}"
            )
        return {f"/{self.descriptor.full_name}/{name}": gate for name, gate in self.gates.items()}

    def full_multiplexed(self) -> dict[str, str]:
        methods = {m.name for m in self.descriptor.methods}
        unknown = (set(self.multiplexed) | set(self.multiplexed.values())) - methods
        if unknown:
            raise StartupError(
                f"{self.descriptor.full_name}: multiplexed names unknown methods {sorted(unknown)}"
            )
        prefix = f"/{self.descriptor.full_name}/"
        return {prefix + stream: prefix + unary for stream, unary in self.multiplexed.items()}


class Runtime:
    """Everything one running service opened, closed in the right order."""

    def __init__(
        self, service: str, settings: ServiceSettings, *, telemetry: Telemetry | None = None
    ) -> None:
        self.service = service
        self.settings = settings
        self.telemetry = telemetry or Telemetry(
            f"treasure-{service}",
            settings.otlp_endpoint,
            sampler_configured=bool(settings.traces_sampler),
        )
        self.metrics = Metrics(service)
        self.port = 0
        self.metrics_port = 0
        self._resources = contextlib.AsyncExitStack()
        self._background: list[asyncio.Task[None]] = []
        self._background_factories: list[tuple[str, Callable[[], Awaitable[None]]]] = []
        self._server: grpc.aio.Server | None = None
        self._acceptors: Acceptors | None = None
        self._health = HealthServicer()
        self._probes: list[Callable[[], Awaitable[object]]] = []
        self._warm_steps: list[tuple[str, Callable[[], Awaitable[object]]]] = []
        self._service_name = ""
        self._memory_reported = False

    @property
    def acceptors(self) -> Acceptors | None:
        """The extra accept loops of the running server (libs.acceptors)."""
        return self._acceptors

    async def __aenter__(self) -> Runtime:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- dependencies -------------------------------------------------------

    async def postgres(
        self,
        dsn: str,
        schema: str,
        migrations: Path | None,
        *,
        min_size: int = 2,
        max_size: int = 10,
        primers: Sequence[pg.Primer] = (),
    ) -> asyncpg.Pool:
        """A pool on `dsn` once Postgres answers, with `schema` migrated. The
        warm-up opens the connections a busy moment uses, each primed with
        the hot path's statements (`pg.prime`)."""
        try:
            await pg.wait_for(dsn, self.settings.startup_timeout_s)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            raise StartupError(f"postgres is not reachable for {schema}: {exc}") from exc
        pool = await pg.create_pool(dsn, min_size=min_size, max_size=max_size)
        self._resources.push_async_callback(pool.close)
        if migrations is not None:
            try:
                await pg.migrate(pool, schema, migrations)
            except pg.MigrationError as exc:
                raise StartupError(f"migrations of {schema}: {exc}") from exc
        self._probes.append(lambda: pool.fetchval("SELECT 1"))
        busy = max(min_size, max_size // 2)  # what a busy moment uses, opened before it
        self.warm(f"postgres pool {schema}", lambda: pg.open_connections(pool, busy, primers))
        return pool

    async def read_route(self, replica: ReadReplica, primary: asyncpg.Pool) -> ReadRoute:
        """Where the stale-tolerant reads go (libs.pgreads): the read replica
        when one is set and within its lag bound, else `primary`. The service
        starts and serves without the replica; its pool connects on first use."""
        if not replica.dsn:
            return ReadRoute(primary, metrics=self.metrics)
        standby = await pg.lazy_pool(replica.dsn)
        self._resources.push_async_callback(standby.close)
        route = ReadRoute(primary, standby, max_lag_s=replica.max_lag_s, metrics=self.metrics)
        self.background("pg-read-replica", route.watch)
        return route

    async def redis(
        self, url: str, contract: rediskit.RedisContract, setting: str
    ) -> rediskit.AnyRedis:
        """A client on `url` once it answers and keeps `contract`."""
        client = rediskit.connect(url)
        self._resources.push_async_callback(client.aclose)
        try:
            await rediskit.wait_for(client, self.settings.startup_timeout_s)
            await rediskit.check_contract(client, contract, setting)
        except rediskit.ContractError as exc:
            raise StartupError(str(exc)) from exc
        self._probes.append(client.ping)
        if not self._memory_reported:  # the service's own Redis: the first one it opens
            self._memory_reported = True
            used = self.metrics.gauge(
                "redis_used_memory_bytes", "used_memory of this service's Redis (all masters)."
            )
            limit = self.metrics.gauge(
                "redis_maxmemory_bytes", "maxmemory of this service's Redis (all masters)."
            )
            self.background("redis-memory", lambda: self._report_memory(client, used, limit))
        return client

    @staticmethod
    async def _report_memory(client: rediskit.AnyRedis, used: Gauge, limit: Gauge) -> None:
        while True:
            try:
                used_bytes, max_bytes = await rediskit.memory(client)
                used.set(used_bytes)
                limit.set(max_bytes)
            except (RedisError, OSError) as exc:
                log.debug("redis memory not read: %s", exc)
            await asyncio.sleep(5.0)

    def channel(self, target: str) -> PeerChannel:
        """A channel to a peer service, closed at shutdown after the server
        stops. It starts connecting during the warm-up; nothing waits for it
        (peers call each other: waiting could wait in a circle)."""
        channel = open_channel(target, self.settings, self.telemetry.tracer)
        self._resources.push_async_callback(channel.close)

        async def connect() -> None:
            channel.get_state(try_to_connect=True)

        self._warm_steps.append((f"connect {target}", connect))
        return channel

    def warm(self, name: str, run: Callable[[], Awaitable[object]]) -> None:
        """A step of the warm-up: run once the dependencies answer and before
        the service reports SERVING, so a new or restarted replica takes its
        first calls with its caches filled. What it returns is logged."""
        self._warm_steps.append((name, run))

    def background(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        """A loop started once the service serves and cancelled at shutdown."""
        self._background_factories.append((name, run))

    # -- serving ------------------------------------------------------------

    async def serve(self, binding: Binding) -> int:
        """Starts the gRPC server, waits for the dependencies, then SERVING."""
        settings = self.settings
        handlers = ServiceHandlers(
            Authenticator(settings.tokens),
            binding.full_roles(),
            self.metrics,
            binding.descriptor.full_name,
            self.telemetry.tracer,
            binding.full_gates(),
            binding.full_multiplexed(),
        )
        server = grpc.aio.server(
            options=[
                ("grpc.so_reuseport", 0),
                ("grpc.max_send_message_length", settings.max_message_bytes),
                ("grpc.max_receive_message_length", settings.max_message_bytes),
                ("grpc.max_concurrent_streams", 1000),
                *_pending_options(settings.grpc_max_pending),
            ],
        )
        registered = handlers.add_to_server(binding.add_to_server, binding.servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        self._service_name = binding.descriptor.full_name
        reflection.enable_server_reflection(
            [
                self._service_name,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            server,
        )
        self.port = _bind(server, settings)
        self._server = server
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        await server.start()
        acceptors = self._acceptors = Acceptors(server, registered, settings.grpc_acceptors)
        acceptors.start()
        self.metrics.gauge_fn(
            "grpc_accept_loops",
            "Extra loops taking calls from gRPC's core (libs/acceptors.py); 0 when off.",
            lambda: acceptors.running,
        )
        self.metrics_port = self.metrics.serve(settings.metrics_listen)
        for probe in self._probes:
            await probe()
        await self._warm_up()
        for name, run in self._background_factories:
            self._background.append(asyncio.create_task(_supervised(name, run), name=name))
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        log.info("serving", extra={"grpc_port": self.port, "grpc_service": self._service_name})
        return self.port

    async def _warm_up(self) -> None:
        """Runs the warm-up steps in order within WARMUP_TIMEOUT_S in all. A
        step that fails or runs out of time is logged and the service serves
        anyway, colder: refusing to serve would turn a slow catalog into an
        outage. `warmup_seconds{step}` and `warmup_complete` say how it went."""
        took = self.metrics.gauge(
            "warmup_seconds", "Time each warm-up step took before SERVING.", ("step",)
        )
        complete = self.metrics.gauge(
            "warmup_complete", "1 when every warm-up step finished before SERVING, else 0."
        )
        budget = self.settings.warmup_timeout_s
        if budget <= 0:
            log.info("warm-up skipped (WARMUP_TIMEOUT_S=0)")
            complete.set(0)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        ok = True
        for name, run in self._warm_steps:
            began = loop.time()
            try:
                async with asyncio.timeout_at(deadline):
                    done = await run()
            except TimeoutError:
                log.error("warm-up ran out of time (WARMUP_TIMEOUT_S=%g) at %s", budget, name)
                ok = False
                break
            except Exception as exc:  # a colder start, not no start
                log.error("warm-up step %s failed: %r", name, exc)
                ok = False
                continue
            finally:
                took.labels(name).set(loop.time() - began)
            if done is not None:
                log.info("warm-up: %s: %s", name, done)
        complete.set(1 if ok else 0)

    async def _set_health(self, status: int) -> None:
        for name in ("", self._service_name):
            await self._health.set(name, status)

    async def close(self) -> None:
        if self._server is not None:
            await self._health.enter_graceful_shutdown()
            await self._server.stop(self.settings.shutdown_grace_s)
            self._server = None
        if self._acceptors is not None:
            await self._acceptors.wait()
            self._acceptors = None
        await _stop_tasks(self._background)
        self._background.clear()
        await self._resources.aclose()
        self.metrics.close()
        await asyncio.to_thread(self.telemetry.shutdown)


async def _stop_tasks(tasks: list[asyncio.Task[None]], patience_s: float = 5.0) -> None:
    """Cancels background loops and waits for them, re-cancelling a loop that
    swallowed its cancellation (Python 3.11's asyncio.timeout can turn a
    cancel that races a deadline into TimeoutError); never waits forever."""
    pending = [t for t in tasks if not t.done()]
    deadline = asyncio.get_running_loop().time() + patience_s
    while pending:
        for task in pending:
            task.cancel()
        _, still = await asyncio.wait(pending, timeout=0.5)
        pending = list(still)
        if pending and asyncio.get_running_loop().time() > deadline:
            log.error("background loops did not stop: %s", [t.get_name() for t in pending])
            break
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.error("background loop %s ended with %r", task.get_name(), task.exception())


async def _supervised(name: str, run: Callable[[], Awaitable[None]]) -> None:
    """Runs a background loop; restarts it after an unexpected error."""
    while True:
        try:
            await run()
            return
        except asyncio.CancelledError:
            raise
        except Exception:  # a loop must not die silently: log it and start again
            log.exception("background loop %s failed; restarting in 1s", name)
            await asyncio.sleep(1.0)


def _bind(server: grpc.aio.Server, settings: ServiceSettings) -> int:
    tls = settings.tls
    if tls.server_enabled:
        credentials = grpc.ssl_server_credentials(
            [(Path(tls.key_file).read_bytes(), Path(tls.cert_file).read_bytes())],
            root_certificates=Path(tls.client_ca_file).read_bytes() if tls.client_ca_file else None,
            require_client_auth=bool(tls.client_ca_file),
        )
        port = server.add_secure_port(settings.grpc_listen, credentials)
    else:
        port = server.add_insecure_port(settings.grpc_listen)
    if port == 0:
        raise StartupError(f"cannot listen on {settings.grpc_listen} (in use?)")
    return port


class _HasCommon(Protocol):
    @property
    def common(self) -> ServiceSettings: ...  # a read-only field of a frozen config


C = TypeVar("C", bound=_HasCommon)


def main(
    service: str,
    load_config: Callable[[Mapping[str, str]], C],
    running: Callable[[C], AbstractAsyncContextManager[Runtime]],
) -> None:
    """The process entry point of a service (`python -m services.<service>`)."""
    try:
        config = load_config(os.environ)
    except ConfigError as exc:
        print(f"treasure-{service}: {exc}", file=sys.stderr)
        sys.exit(2)
    setup_logging(f"treasure-{service}", config.common.log_level)
    sys.exit(uvloop.run(_serve(service, config, running)))


async def _serve(
    service: str, config: C, running: Callable[[C], AbstractAsyncContextManager[Runtime]]
) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with running(config):
            await stop.wait()
            log.info("shutting down")
    except StartupError as exc:
        log.error("cannot start: %s", exc)
        print(f"treasure-{service}: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


def _pending_options(most: int) -> list[tuple[str, int]]:
    """gRPC core's bound on the calls it holds before a handler takes them."""
    if not most:
        return []
    return [
        ("grpc.server.max_pending_requests", most),
        ("grpc.server.max_pending_requests_hard_limit", 2 * most),
    ]
