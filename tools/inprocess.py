"""Our services running in this process on free ports (port 0), for the
tests and the benchmarks: the settings they get (`service_env`: the local
stack's tokens, short timeouts), any service with `in_process`, and score and
geo with their peers' doubles (tools/doubles.py) and clients or stubs per
role; with builders of geo catalog entries (a hunt on a grid around Lisbon,
its checkpoints)."""

from __future__ import annotations

import contextlib
import importlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc

from libs.auth import bearer_interceptors
from libs.server import Runtime
from libs.telemetry import Telemetry
from libs.timestamps import timestamp
from services.geo import __main__ as geo_main
from services.geo.client import GeoClient
from services.geo.config import GeoConfig
from services.score.__main__ import running as score_running
from services.score.client import ScoreClient
from services.score.config import ScoreConfig
from tools.doubles import FakeCatalog, serve_catalog
from tools.stack import ADMIN_TOKEN, CLIENT_TOKEN, SERVICE_TOKEN, TOKENS
from treasure.common.v1 import common_pb2
from treasure.geo.v1 import geo_pb2, geo_pb2_grpc


def service_env(prefix: str, **settings: str) -> dict[str, str]:
    """Environment of one service run on its own (in process, or as a process):
    the local tokens, port 0, short timeouts, then `settings`."""
    env = {
        **TOKENS,
        f"{prefix}_GRPC_LISTEN": "127.0.0.1:0",
        f"{prefix}_METRICS_LISTEN": "127.0.0.1:0",
        "SHUTDOWN_GRACE_S": "5",
        "STARTUP_TIMEOUT_S": "10",
    }
    env.update(settings)
    return env


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


# -- score ------------------------------------------------------------------


def score_config(
    pg_dsn: str, redis_url: str, leaderboard_addr: str, **settings: str
) -> ScoreConfig:
    env = service_env(
        "SCORE",
        SCORE_PG_DSN=pg_dsn,
        SCORE_REDIS_URL=redis_url,
        LEADERBOARD_SERVICE_ADDR=leaderboard_addr,
        **settings,
    )
    return ScoreConfig.from_env(env)


@contextlib.asynccontextmanager
async def score_service(
    pg_dsn: str,
    redis_url: str,
    leaderboard_addr: str,
    *,
    telemetry: Telemetry | None = None,
    catalog: FakeCatalog | None = None,
    **settings: str,
) -> AsyncIterator[Runtime]:
    """The score service in this process on a free port, until the block exits.
    Geo's catalog is a double (`catalog`, or one where every hunt exists)
    unless GEO_SERVICE_ADDR is given."""
    async with contextlib.AsyncExitStack() as stack:
        if "GEO_SERVICE_ADDR" not in settings:
            settings["GEO_SERVICE_ADDR"] = await stack.enter_async_context(serve_catalog(catalog))
        config = score_config(pg_dsn, redis_url, leaderboard_addr, **settings)
        async with score_running(config, telemetry=telemetry) as runtime:
            yield runtime


@contextlib.asynccontextmanager
async def channel_to(port: int, token: str = SERVICE_TOKEN) -> AsyncIterator[grpc.aio.Channel]:
    channel = grpc.aio.insecure_channel(
        f"127.0.0.1:{port}", interceptors=list(bearer_interceptors(token))
    )
    try:
        yield channel
    finally:
        await channel.close()


class Clients:
    """The score client as its callers hold it: Unlock and StreamScores with
    the service token, GetScore and GetProgress with the client token."""

    def __init__(self, service: ScoreClient, public: ScoreClient) -> None:
        self.unlock = service.unlock
        self.stream_scores = service.stream_scores
        self.get_score = public.get_score
        self.get_progress = public.get_progress


@contextlib.asynccontextmanager
async def score_client(port: int) -> AsyncIterator[Clients]:
    async with channel_to(port, SERVICE_TOKEN) as service, channel_to(port, CLIENT_TOKEN) as public:
        yield Clients(ScoreClient(service, timeout_s=10.0), ScoreClient(public, timeout_s=10.0))


# -- geo --------------------------------------------------------------------

#: Lisbon, Praça do Comércio: where test hunts happen.
ORIGIN = (38.7075, -9.1364)
#: The default hunt grid starts 2 km south and 2 km west of ORIGIN (1 km
#: tiles): every checkpoint of a hunt must lie on its grid.
GRID_ORIGIN = (ORIGIN[0] - 2000 / 111_195.0, ORIGIN[1] - 2000 / (111_195.0 * 0.7806))

#: Callers refresh the tile view themselves; the background loop stays out of the way.
GEO_SETTINGS = {"GEO_TILE_REFRESH_S": "86400"}


@dataclass
class Geo:
    """A running geo service and a stub per role."""

    runtime: Runtime
    admin: geo_pb2_grpc.GeoServiceStub
    client: geo_pb2_grpc.GeoServiceStub
    service: geo_pb2_grpc.GeoServiceStub
    #: The client other services use (scan), presenting the service token.
    geo_client: GeoClient

    def queries(self, name: str) -> float:
        """How many Postgres statements of one kind this geo ran."""
        value = self.runtime.metrics.registry.get_sample_value(
            "geo_store_queries_total", {"query": name}
        )
        return value or 0.0

    def cache_count(self, cache: str, tier: str, result: str) -> float:
        value = self.runtime.metrics.registry.get_sample_value(
            "cache_requests_total", {"cache": cache, "tier": tier, "result": result}
        )
        return value or 0.0


@contextlib.asynccontextmanager
async def geo_service(
    pg_dsn: str, redis_url: str, *, clock: Callable[[], float] | None = None, **settings: str
) -> AsyncIterator[Geo]:
    env = service_env("GEO", GEO_PG_DSN=pg_dsn, GEO_REDIS_URL=redis_url, **GEO_SETTINGS)
    env.update(settings)
    config = GeoConfig.from_env(env)
    async with geo_main.running(config, clock=clock or time.time) as runtime:
        target = f"127.0.0.1:{runtime.port}"
        channels = {
            token: grpc.aio.insecure_channel(target, interceptors=bearer_interceptors(token))
            for token in (ADMIN_TOKEN, CLIENT_TOKEN, SERVICE_TOKEN)
        }
        try:
            yield Geo(
                runtime=runtime,
                admin=geo_pb2_grpc.GeoServiceStub(channels[ADMIN_TOKEN]),
                client=geo_pb2_grpc.GeoServiceStub(channels[CLIENT_TOKEN]),
                service=geo_pb2_grpc.GeoServiceStub(channels[SERVICE_TOKEN]),
                geo_client=GeoClient(channels[SERVICE_TOKEN], timeout_s=5.0),
            )
        finally:
            for channel in channels.values():
                await channel.close()


def point(lat: float, lon: float) -> common_pb2.GeoPoint:
    return common_pb2.GeoPoint(lat=lat, lon=lon)


def hunt_message(
    hunt_id: str = "h1",
    *,
    name: str = "Lisbon hunt",
    starts_at: datetime | None = None,
    ends_at: datetime | None = None,
    status: geo_pb2.HuntStatus = geo_pb2.HUNT_STATUS_PUBLISHED,
    columns: int = 10,
    rows: int = 10,
    tile_size_m: float = 1000.0,
    origin: tuple[float, float] = GRID_ORIGIN,
) -> geo_pb2.Hunt:
    now = datetime.now(UTC)
    return geo_pb2.Hunt(
        hunt_id=hunt_id,
        name=name,
        starts_at=timestamp(starts_at or now - timedelta(hours=1)),
        ends_at=timestamp(ends_at or now + timedelta(hours=5)),
        status=status,
        grid=geo_pb2.TileGrid(
            origin=point(*origin), tile_size_m=tile_size_m, columns=columns, rows=rows
        ),
    )


def checkpoint_message(
    checkpoint_id: str = "c1",
    *,
    hunt_id: str = "h1",
    tag_id: str = "t1",
    name: str = "Arco da Rua Augusta",
    lat: float = ORIGIN[0],
    lon: float = ORIGIN[1],
    radius_m: float = 25.0,
    points: int = 10,
    first_finder_bonus: int = 5,
) -> geo_pb2.Checkpoint:
    return geo_pb2.Checkpoint(
        checkpoint_id=checkpoint_id,
        hunt_id=hunt_id,
        tag_id=tag_id,
        name=name,
        location=point(lat, lon),
        radius_m=radius_m,
        points=points,
        first_finder_bonus=first_finder_bonus,
    )
