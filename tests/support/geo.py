"""Running the geo service for tests: in-process on port 0 with a movable
clock, stubs per role, and small builders of catalog entries."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc

from libs.auth import bearer_interceptors
from libs.server import Runtime
from libs.timestamps import timestamp
from services.geo import __main__ as geo_main
from services.geo.client import GeoClient
from services.geo.config import GeoConfig
from tests.support.env import ADMIN_TOKEN, CLIENT_TOKEN, SERVICE_TOKEN, service_env
from treasure.common.v1 import common_pb2
from treasure.geo.v1 import geo_pb2, geo_pb2_grpc

#: Lisbon, Praça do Comércio: where test hunts happen.
ORIGIN = (38.7075, -9.1364)
#: The default hunt grid starts 2 km south and 2 km west of ORIGIN (1 km
#: tiles): every checkpoint of a hunt must lie on its grid.
GRID_ORIGIN = (ORIGIN[0] - 2000 / 111_195.0, ORIGIN[1] - 2000 / (111_195.0 * 0.7806))

#: Tests refresh the tile view themselves; the background loop stays out of the way.
TEST_SETTINGS = {"GEO_TILE_REFRESH_S": "86400"}


class FakeClock:
    """Unix seconds that move only when told (starts at the real time, or `start`)."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def datetime(self) -> datetime:
        return datetime.fromtimestamp(self.now, UTC)


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
    pg_dsn: str, redis_url: str, *, clock: FakeClock | None = None, **settings: str
) -> AsyncIterator[Geo]:
    env = service_env("GEO", GEO_PG_DSN=pg_dsn, GEO_REDIS_URL=redis_url, **TEST_SETTINGS)
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
    status: int = geo_pb2.HUNT_STATUS_PUBLISHED,
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


async def create_hunt(geo: Geo, hunt_id: str = "h1", **kwargs: object) -> geo_pb2.Hunt:
    reply = await geo.admin.CreateHunt(
        geo_pb2.CreateHuntRequest(hunt=hunt_message(hunt_id, **kwargs))  # type: ignore[arg-type]
    )
    return reply.hunt


async def upsert_checkpoint(
    geo: Geo, checkpoint_id: str = "c1", **kwargs: object
) -> geo_pb2.Checkpoint:
    reply = await geo.admin.UpsertCheckpoint(
        geo_pb2.UpsertCheckpointRequest(checkpoint=checkpoint_message(checkpoint_id, **kwargs))  # type: ignore[arg-type]
    )
    return reply.checkpoint


async def status_of(call) -> grpc.StatusCode:
    """The status code a call ends with."""
    try:
        await call
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK
