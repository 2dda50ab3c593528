"""CheckIn through the real client (GeoClient, as scan calls it): tag resolution
through L1, Redis and Postgres, single-flight, invalidation, distances."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from libs.geometry import distance_m
from services.geo.model import HuntStatus, TagStatus
from tests.support.geo import create_hunt, upsert_checkpoint
from tests.support.infra import flush
from tools.inprocess import ORIGIN, geo_service, point
from treasure.geo.v1 import geo_pb2

#: L1 time to live of the replicas whose L1 expiry a test waits for.
L1_TTL_S = 1.0


@pytest.fixture
async def geo(pg_dsn, redis_urls):
    async with geo_service(pg_dsn, redis_urls["geo"]) as running:
        yield running


def replica(pg_dsn: str, redis_urls: dict[str, str], **settings: str):
    """Another geo process on the same Postgres and Redis, with a fresh L1
    (cold: no warm-up, unless `WARMUP_TIMEOUT_S` is given)."""
    settings.setdefault("WARMUP_TIMEOUT_S", "0")
    return geo_service(pg_dsn, redis_urls["geo"], **settings)


async def _l1_expires() -> None:
    await asyncio.sleep(L1_TTL_S * 1.2)


async def check_in(geo, tag_id="t1", *, hunt_id="h1", player_id="p1", at=None, **where):
    lat, lon = where.get("lat", ORIGIN[0]), where.get("lon", ORIGIN[1])
    return await geo.geo_client.check_in(
        hunt_id=hunt_id,
        player_id=player_id,
        tag_id=tag_id,
        lat=lat,
        lon=lon,
        accuracy_m=where.get("accuracy_m", 0.0),
        at=at or datetime.now(UTC),
    )


async def test_tag_resolution_through_each_tier(pg_dsn, redis_urls, geo):
    await create_hunt(geo, "h1")
    await upsert_checkpoint(geo, "c1", tag_id="t1", points=10, first_finder_bonus=5)
    await flush(redis_urls["geo"])
    async with replica(pg_dsn, redis_urls, GEO_L1_TTL_S=str(L1_TTL_S)) as fresh:
        # Nothing cached: Postgres answers (one query for the tag and its hunt).
        first = await check_in(fresh)
        assert first.tag_status is TagStatus.FOUND and first.in_range
        assert (first.checkpoint_id, first.points, first.first_finder_bonus) == ("c1", 10, 5)
        assert first.hunt_status is HuntStatus.PUBLISHED and first.hunt_active_at(datetime.now(UTC))
        assert fresh.queries("tag") == 1 and fresh.cache_count("tag", "redis", "miss") == 1

        # L1 answers.
        assert (await check_in(fresh)).checkpoint_id == "c1"
        assert fresh.cache_count("tag", "l1", "hit") == 1 and fresh.queries("tag") == 1

        # L1 expired: Redis answers (the Postgres read was written through).
        await _l1_expires()
        assert (await check_in(fresh)).checkpoint_id == "c1"
        assert fresh.cache_count("tag", "redis", "hit") == 1 and fresh.queries("tag") == 1

        # Redis flushed: still correct, from Postgres again.
        await flush(redis_urls["geo"])
        await _l1_expires()
        assert await check_in(fresh) == first
        assert fresh.queries("tag") == 2


async def test_a_burst_for_one_uncached_tag_makes_one_query(pg_dsn, redis_urls, geo):
    await create_hunt(geo, "h1")
    await upsert_checkpoint(geo, "c1", tag_id="t1")
    await flush(redis_urls["geo"])
    async with replica(pg_dsn, redis_urls) as fresh:
        results = await asyncio.gather(*(check_in(fresh, player_id=f"p{i}") for i in range(100)))
        assert {r.tag_status for r in results} == {TagStatus.FOUND}
        assert {r.checkpoint_id for r in results} == {"c1"}
        assert fresh.queries("tag") == 1
        assert fresh.queries("get_hunt") == 0  # the hunt came with the tag


async def test_a_replica_is_serving_only_with_the_played_hunts_warm(pg_dsn, redis_urls, geo):
    now = datetime.now(UTC)
    await create_hunt(geo, "h1")  # played now
    await create_hunt(geo, "soon", starts_at=now + timedelta(minutes=30))
    await create_hunt(geo, "later", starts_at=now + timedelta(hours=3))
    await create_hunt(
        geo, "over", starts_at=now - timedelta(hours=3), ends_at=now - timedelta(hours=1)
    )
    await create_hunt(geo, "draft", status=geo_pb2.HUNT_STATUS_DRAFT)
    await upsert_checkpoint(geo, "c1", tag_id="t1")
    await upsert_checkpoint(geo, "c2", tag_id="t2")
    await geo.admin.DeactivateCheckpoint(
        geo_pb2.DeactivateCheckpointRequest(hunt_id="h1", checkpoint_id="c2")
    )
    for hunt_id in ("soon", "later", "over", "draft"):
        await upsert_checkpoint(geo, f"c-{hunt_id}", hunt_id=hunt_id, tag_id=f"t-{hunt_id}")
    await flush(redis_urls["geo"])
    async with replica(pg_dsn, redis_urls, WARMUP_TIMEOUT_S="10") as warm:
        assert warm.queries("played_catalog") == 1
        # Tags of the hunts played now or within the hour, active or not, answer from L1.
        assert (await check_in(warm)).checkpoint_id == "c1"
        assert (await check_in(warm, "t2")).tag_status is TagStatus.INACTIVE
        assert (await check_in(warm, "t-soon", hunt_id="soon")).checkpoint_id == "c-soon"
        assert warm.cache_count("tag", "l1", "hit") == 3
        assert warm.queries("tag") == 0 and warm.queries("get_hunt") == 0
        # The checkpoint sets are in Redis: NearbyCheckpoints rebuilds nothing.
        nearby = await warm.client.NearbyCheckpoints(
            geo_pb2.NearbyCheckpointsRequest(hunt_id="h1", center=point(*ORIGIN), radius_m=500)
        )
        assert [n.checkpoint.checkpoint_id for n in nearby.checkpoints] == ["c1"]
        assert warm.cache_count("checkpoint_set", "redis", "hit") == 1
        assert warm.queries("active_checkpoints") == 0
        # Hunts not played within the hour were left out.
        await check_in(warm, "t-later", hunt_id="later")
        await check_in(warm, "t-over", hunt_id="over")
        await check_in(warm, "t-draft", hunt_id="draft")
        assert warm.queries("tag") == 3
        assert warm.runtime.metrics.registry.get_sample_value("warmup_complete") == 1
    async with replica(pg_dsn, redis_urls) as cold:  # the same without a warm-up
        await flush(redis_urls["geo"])
        assert (await check_in(cold)).checkpoint_id == "c1"
        assert cold.queries("played_catalog") == 0 and cold.queries("tag") == 1


async def test_unknown_foreign_and_inactive_tags(geo):
    await create_hunt(geo, "h1")
    await create_hunt(geo, "h2")
    await upsert_checkpoint(geo, "c1", tag_id="t1")
    await upsert_checkpoint(geo, "c2", hunt_id="h2", tag_id="t2")

    unknown = await check_in(geo, "no-such-tag")
    assert unknown.tag_status is TagStatus.UNKNOWN and unknown.checkpoint_id == ""
    assert unknown.hunt_status is None and not unknown.in_range
    # A tag of another hunt is unknown in this one.
    assert (await check_in(geo, "t2")).tag_status is TagStatus.UNKNOWN
    assert (await check_in(geo, "t2", hunt_id="h2")).tag_status is TagStatus.FOUND

    await geo.admin.DeactivateCheckpoint(
        geo_pb2.DeactivateCheckpointRequest(hunt_id="h1", checkpoint_id="c1")
    )
    inactive = await check_in(geo, "t1")
    assert inactive.tag_status is TagStatus.INACTIVE
    assert inactive.checkpoint_id == "c1" and inactive.hunt_status is HuntStatus.PUBLISHED


async def test_a_hunt_that_does_not_exist_is_told_from_an_unknown_tag(geo):
    await create_hunt(geo, "h1")
    await upsert_checkpoint(geo, "c1", tag_id="t1")
    for tag in ("t1", "no-such-tag"):  # a real tag, or none: the hunt decides first
        for _ in range(2):  # the second answer comes from the caches
            ghost = await check_in(geo, tag, hunt_id="no-such-hunt")
            assert ghost.tag_status is TagStatus.UNKNOWN_HUNT
            assert (ghost.checkpoint_id, ghost.points, ghost.hunt_status) == ("", 0, None)
    assert (await check_in(geo, "no-such-tag")).tag_status is TagStatus.UNKNOWN
    # A hunt created afterwards is found at once: CreateHunt replaces the cached absence.
    await create_hunt(geo, "no-such-hunt")
    assert (await check_in(geo, "no-such-tag", hunt_id="no-such-hunt")).tag_status is (
        TagStatus.UNKNOWN
    )


async def test_catalog_writes_reach_check_in(geo):
    await create_hunt(geo, "h1")
    await upsert_checkpoint(geo, "c1", tag_id="t1", points=10)
    assert (await check_in(geo, "t1")).points == 10

    # Same process: visible at once (written through to L1 and Redis).
    await upsert_checkpoint(geo, "c1", tag_id="t1b", points=20)
    assert (await check_in(geo, "t1")).tag_status is TagStatus.UNKNOWN
    moved = await check_in(geo, "t1b")
    assert moved.tag_status is TagStatus.FOUND and moved.points == 20

    await geo.admin.UpdateHunt(
        geo_pb2.UpdateHuntRequest(
            hunt=geo_pb2.Hunt(hunt_id="h1", status=geo_pb2.HUNT_STATUS_CANCELLED),
            update_mask={"paths": ["status"]},
        )
    )
    cancelled = await check_in(geo, "t1b")
    assert cancelled.hunt_status is HuntStatus.CANCELLED
    assert not cancelled.hunt_active_at(datetime.now(UTC))
    # A tag created after an "unknown" answer resolves at once too.
    assert (await check_in(geo, "t3")).tag_status is TagStatus.UNKNOWN
    await upsert_checkpoint(geo, "c3", tag_id="t3")
    assert (await check_in(geo, "t3")).tag_status is TagStatus.FOUND


async def test_another_replica_converges_within_its_l1_ttl(pg_dsn, redis_urls, geo):
    await create_hunt(geo, "h1")
    await upsert_checkpoint(geo, "c1", tag_id="t1")
    async with replica(pg_dsn, redis_urls, GEO_L1_TTL_S=str(L1_TTL_S)) as other:
        assert (await check_in(other, "t1")).tag_status is TagStatus.FOUND
        await geo.admin.DeactivateCheckpoint(
            geo_pb2.DeactivateCheckpointRequest(hunt_id="h1", checkpoint_id="c1")
        )
        await _l1_expires()
        assert (await check_in(other, "t1")).tag_status is TagStatus.INACTIVE
        assert other.queries("tag") == 0  # it came from Redis, written through by `geo`


async def test_distance_edge_cases(geo):
    await create_hunt(geo, "h1")
    # Exactly on the radius is in range; a little further is not.
    player = (38.7080, -9.1360)
    exact = distance_m(ORIGIN[0], ORIGIN[1], *player)
    await upsert_checkpoint(geo, "c1", tag_id="t1", radius_m=exact)
    on_edge = await check_in(geo, "t1", lat=player[0], lon=player[1])
    assert on_edge.distance_m == on_edge.allowed_m == exact and on_edge.in_range
    beyond = await check_in(geo, "t1", lat=player[0] + 1e-6, lon=player[1])
    assert beyond.distance_m > exact and not beyond.in_range
    # Accuracy widens the range by at most 50 m.
    sloppy = await check_in(geo, "t1", lat=player[0] + 1e-6, lon=player[1], accuracy_m=500)
    assert sloppy.allowed_m == pytest.approx(exact + 50) and sloppy.in_range
    assert (await check_in(geo, "t1", accuracy_m=7.5)).allowed_m == pytest.approx(exact + 7.5)

    # Across the antimeridian: 0.0002 degrees of longitude at the equator, not 360.
    await create_hunt(geo, "h-180", origin=(-0.01, 179.99), tile_size_m=1000, columns=5, rows=5)
    await upsert_checkpoint(
        geo, "c2", hunt_id="h-180", tag_id="t2", lat=0.0, lon=179.9999, radius_m=25
    )
    across = await check_in(geo, "t2", hunt_id="h-180", lat=0.0, lon=-179.9999)
    assert across.distance_m == pytest.approx(22.239, abs=0.01) and across.in_range

    # Near the pole: the two points face each other across it.
    await create_hunt(geo, "h-pole", origin=(89.99, -0.5), tile_size_m=1000, columns=5, rows=5)
    await upsert_checkpoint(
        geo, "c3", hunt_id="h-pole", tag_id="t3", lat=89.9999, lon=0.0, radius_m=25
    )
    polar = await check_in(geo, "t3", hunt_id="h-pole", lat=89.9999, lon=180.0)
    assert polar.distance_m == pytest.approx(22.239, abs=0.01) and polar.in_range
    far = await check_in(geo, "t3", hunt_id="h-pole", lat=89.9990, lon=90.0)
    assert (
        far.distance_m == pytest.approx(distance_m(89.9999, 0.0, 89.9990, 90.0), rel=1e-9)
        and not far.in_range
    )


async def test_check_in_records_the_location(geo):
    await create_hunt(geo, "h1")
    await upsert_checkpoint(geo, "c1", tag_id="t1")
    await check_in(geo, "t1", player_id="walker", lat=38.7076, lon=-9.1365, accuracy_m=4)
    where = (
        await geo.client.GetPlayerLocation(geo_pb2.GetPlayerLocationRequest(player_id="walker"))
    ).location
    assert (where.hunt_id, where.location.lat, where.location.lon, where.accuracy_m) == (
        "h1", 38.7076, -9.1365, 4.0,
    )  # fmt: skip
    nearby = await geo.client.NearbyPlayers(
        geo_pb2.NearbyPlayersRequest(hunt_id="h1", center=point(38.7075, -9.1364), radius_m=100)
    )
    assert [p.player_id for p in nearby.players] == ["walker"]
