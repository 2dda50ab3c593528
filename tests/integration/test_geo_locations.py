"""Player locations, NearbyPlayers (exactly the last 60 s) and NearbyCheckpoints
(the per-hunt geo set, rebuilt from Postgres when missing)."""

from __future__ import annotations

import math
from datetime import timedelta

import grpc
import pytest

from libs import rediskit
from libs.geometry import EARTH_RADIUS_M
from libs.timestamps import timestamp
from tests.support.geo import FakeClock, create_hunt, status_of, upsert_checkpoint
from tools.inprocess import ORIGIN, geo_service, point
from treasure.geo.v1 import geo_pb2

BUCKET_S = 20
M_PER_DEG = EARTH_RADIUS_M * math.pi / 180


def north(metres: float) -> tuple[float, float]:
    """The point `metres` north of ORIGIN."""
    return ORIGIN[0] + metres / M_PER_DEG, ORIGIN[1]


@pytest.fixture
def clock() -> FakeClock:
    """One second into a live bucket, so the test knows which buckets exist."""
    return FakeClock(start=(math.floor(FakeClock().now / BUCKET_S) + 1) * BUCKET_S + 1.0)


@pytest.fixture
async def geo(pg_dsn, redis_urls, clock):
    async with geo_service(
        pg_dsn, redis_urls["geo"], clock=clock, GEO_LIVE_BUCKET_S=str(BUCKET_S)
    ) as running:
        await create_hunt(running, "h1")
        yield running


async def update(geo, player_id: str, where: tuple[float, float], **extra) -> None:
    await geo.client.UpdateLocation(
        geo_pb2.UpdateLocationRequest(
            hunt_id="h1", player_id=player_id, location=point(*where), **extra
        )
    )


async def nearby_players(geo, radius_m: float = 1000, limit: int = 0) -> list[str]:
    reply = await geo.client.NearbyPlayers(
        geo_pb2.NearbyPlayersRequest(
            hunt_id="h1", center=point(*ORIGIN), radius_m=radius_m, limit=limit
        )
    )
    return [p.player_id for p in reply.players]


async def test_last_location_lasts_30_seconds(geo, clock):
    await update(geo, "p1", north(10), accuracy_m=3)
    reply = await geo.client.GetPlayerLocation(geo_pb2.GetPlayerLocationRequest(player_id="p1"))
    assert reply.location.player_id == "p1" and reply.location.hunt_id == "h1"
    assert reply.location.location.lat == north(10)[0] and reply.location.accuracy_m == 3
    assert reply.location.seen_at.ToMilliseconds() == int(clock.now * 1000)

    # An older fix arriving late does not move the player back.
    await update(geo, "p1", north(500), at=timestamp(clock.datetime() - timedelta(seconds=5)))
    reply = await geo.client.GetPlayerLocation(geo_pb2.GetPlayerLocationRequest(player_id="p1"))
    assert reply.location.location.lat == north(10)[0]

    clock.advance(30)
    assert (
        await status_of(
            geo.client.GetPlayerLocation(geo_pb2.GetPlayerLocationRequest(player_id="p1"))
        )
        == grpc.StatusCode.OK
    )
    clock.advance(0.01)
    assert (
        await status_of(
            geo.client.GetPlayerLocation(geo_pb2.GetPlayerLocationRequest(player_id="p1"))
        )
        == grpc.StatusCode.NOT_FOUND
    )
    assert (
        await status_of(
            geo.client.GetPlayerLocation(geo_pb2.GetPlayerLocationRequest(player_id="p9"))
        )
        == grpc.StatusCode.NOT_FOUND
    )


async def test_nearby_players_are_those_seen_in_the_last_60_seconds(geo, clock):
    start = clock.now
    await update(geo, "old", north(10))
    await update(geo, "mover", north(20))
    await update(geo, "far", north(5000))
    clock.advance(30)
    await update(geo, "fresh", north(30))
    await update(geo, "mover", north(3000))  # moved away: its newest position counts
    clock.advance(29.5)
    assert await nearby_players(geo) == ["old", "fresh"]
    assert await nearby_players(geo, limit=1) == ["old"]

    clock.now = start + 60  # seen exactly 60 s ago: still in
    assert await nearby_players(geo) == ["old", "fresh"]
    clock.now = start + 60.001  # just over: out, though its bucket is still there
    assert await nearby_players(geo) == ["fresh"]
    assert await nearby_players(geo, radius_m=10_000) == ["fresh", "mover"]

    # A fix already older than 60 s never shows up.
    await update(geo, "stale", north(5), at=timestamp(clock.datetime() - timedelta(seconds=61)))
    assert "stale" not in await nearby_players(geo)


async def test_nearby_players_of_an_unknown_hunt(geo):
    reply = geo.client.NearbyPlayers(
        geo_pb2.NearbyPlayersRequest(hunt_id="nope", center=point(*ORIGIN), radius_m=10)
    )
    assert await status_of(reply) == grpc.StatusCode.NOT_FOUND
    update_call = geo.client.UpdateLocation(
        geo_pb2.UpdateLocationRequest(hunt_id="nope", player_id="p1", location=point(*ORIGIN))
    )
    assert await status_of(update_call) == grpc.StatusCode.NOT_FOUND


async def nearby_checkpoints(geo, radius_m: float, limit: int = 0, hunt_id="h1", center=ORIGIN):
    reply = await geo.client.NearbyCheckpoints(
        geo_pb2.NearbyCheckpointsRequest(
            hunt_id=hunt_id, center=point(*center), radius_m=radius_m, limit=limit
        )
    )
    return [(c.checkpoint.checkpoint_id, round(c.distance_m, 3)) for c in reply.checkpoints]


async def test_nearby_checkpoints(geo, redis_urls):
    for metres in (200, 10, 1500, 50):
        lat, lon = north(metres)
        await upsert_checkpoint(geo, f"c{metres}", tag_id=f"t{metres}", lat=lat, lon=lon)

    assert await nearby_checkpoints(geo, 300) == [("c10", 10.0), ("c50", 50.0), ("c200", 200.0)]
    assert await nearby_checkpoints(geo, 300, limit=2) == [("c10", 10.0), ("c50", 50.0)]
    assert await nearby_checkpoints(geo, 9.9) == []
    misses = geo.cache_count("checkpoint_set", "redis", "miss")

    # A deactivated checkpoint leaves at once; a moved one shows where it is now.
    await geo.admin.DeactivateCheckpoint(
        geo_pb2.DeactivateCheckpointRequest(hunt_id="h1", checkpoint_id="c50")
    )
    lat, lon = north(250)
    await upsert_checkpoint(geo, "c10", tag_id="t10", lat=lat, lon=lon)
    assert await nearby_checkpoints(geo, 300) == [("c200", 200.0), ("c10", 250.0)]
    assert geo.cache_count("checkpoint_set", "redis", "miss") == misses + 1

    # The set is rebuilt from Postgres when Redis lost it.
    client = rediskit.connect(redis_urls["geo"])
    try:
        await client.flushall()
    finally:
        await client.aclose()
    queries = geo.queries("active_checkpoints")
    assert await nearby_checkpoints(geo, 2000) == [
        ("c200", 200.0), ("c10", 250.0), ("c1500", 1500.0),
    ]  # fmt: skip
    assert await nearby_checkpoints(geo, 2000) == await nearby_checkpoints(geo, 2000)
    assert geo.queries("active_checkpoints") == queries + 1

    assert (
        await status_of(
            geo.client.NearbyCheckpoints(
                geo_pb2.NearbyCheckpointsRequest(hunt_id="nope", center=point(*ORIGIN), radius_m=5)
            )
        )
        == grpc.StatusCode.NOT_FOUND
    )


async def test_nearby_checkpoints_near_a_pole(geo):
    # Redis GEO cannot index latitudes above 85.05; such checkpoints are still found.
    await create_hunt(geo, "arctic", origin=(79.9, -1.0), tile_size_m=10_000, columns=20, rows=120)
    await upsert_checkpoint(geo, "pole", hunt_id="arctic", tag_id="tp", lat=89.9999, lon=0.0)
    await upsert_checkpoint(geo, "low", hunt_id="arctic", tag_id="tl", lat=80.0, lon=0.0)
    found = await nearby_checkpoints(geo, 100, hunt_id="arctic", center=(89.9999, 180.0))
    assert found == [("pole", 22.239)]
    found = await nearby_checkpoints(geo, 10, hunt_id="arctic", center=(80.0, 0.00001))
    assert [cp for cp, _ in found] == ["low"]
