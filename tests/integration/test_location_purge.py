"""Location retention (issue 9, "Security"): a scan's location is purged from
Postgres and from the scan Redis a set time after its hunt ends, on real
Postgres and Redis. Time passing is simulated by moving rows' times back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import pytest

from libs import pg, rediskit
from libs.config import ConfigError
from libs.metrics import Metrics
from libs.timestamps import timestamp
from services.scan import keys
from services.scan.cache import ScanCache
from services.scan.config import ScanConfig
from services.scan.model import Answer, Outcome, Position, ScanInput, Status, new_scan_id
from services.scan.purge import LocationPurge
from services.scan.store import PURGE_DUE, ScanStore
from tests.support.env import CLIENT_TOKEN, bearer
from tests.support.geo import create_hunt, upsert_checkpoint
from tests.support.polling import eventually
from tests.support.worklog import work_done
from tools.doubles import LeaderboardDouble
from tools.inprocess import ORIGIN, geo_service, in_process, score_service
from treasure.common.v1 import common_pb2
from treasure.scan.v1 import scan_pb2, scan_pb2_grpc

RETENTION = timedelta(days=1)
NOW = datetime.now(UTC).replace(microsecond=0)
LEASE = timedelta(seconds=60)


def scan(player: str, hunt: str, client_scan_id: str, at: datetime = NOW) -> ScanInput:
    return ScanInput(player, hunt, "t1", 38.7, -9.1, 5.0, at, client_scan_id)


@pytest.fixture
async def pool(pg_dsn) -> AsyncIterator[asyncpg.Pool]:
    pool = await pg.create_pool(pg_dsn)
    yield pool
    await pool.close()


@pytest.fixture
async def redis(redis_urls):
    client = rediskit.connect(redis_urls["scan"])
    yield client
    await client.aclose()


def scan_cache(redis, last_scan_ttl_s: int) -> ScanCache:
    return ScanCache(
        redis,
        rate_limit=100,
        rate_window_s=1,
        pending_ttl_s=5,
        answer_ttl_s=60,
        last_scan_ttl_s=last_scan_ttl_s,
    )


def purger(pool, redis, *, batch: int = 1000) -> tuple[LocationPurge, Metrics]:
    metrics = Metrics("scan")
    purge = LocationPurge(
        ScanStore(pool),
        scan_cache(redis, int(RETENTION.total_seconds())),
        metrics,
        retention_s=RETENTION.total_seconds(),
        batch=batch,
    )
    return purge, metrics


async def recorded(store: ScanStore, player: str, hunt: str, client_scan_id: str) -> str:
    record, _ = await store.insert(new_scan_id(), scan(player, hunt, client_scan_id), LEASE, "")
    return record.scan_id


async def applied(
    store: ScanStore,
    player: str,
    hunt: str,
    client_scan_id: str,
    hunt_ends_at: datetime | None,
    outcome: Outcome = Outcome.OUT_OF_RANGE,
) -> str:
    scan_id = await recorded(store, player, hunt, client_scan_id)
    await store.apply(Answer(scan_id, Status.APPLIED, outcome), hunt_ends_at)
    return scan_id


async def move_back(pool, scan_id: str, by: timedelta) -> None:
    """As if the scan happened `by` earlier (its hunt's end stays as recorded)."""
    await pool.execute(
        """UPDATE scan.scans SET scanned_at = scanned_at - $2::interval,
               received_at = received_at - $2::interval, applied_at = applied_at - $2::interval
           WHERE scan_id = $1""",
        scan_id,
        by,
    )


async def location(pool, scan_id: str) -> tuple:
    row = await pool.fetchrow(
        "SELECT lat, lon, accuracy_m, location_purged_at FROM scan.scans WHERE scan_id = $1",
        scan_id,
    )
    return row["lat"], row["lon"], row["accuracy_m"], row["location_purged_at"] is not None


KEPT = (38.7, -9.1, 5.0, False)
PURGED = (None, None, None, True)


async def test_only_locations_past_their_retention_are_purged(pool, redis):
    store = ScanStore(pool)
    ended_long_ago = [
        await applied(store, "p-old", "h-old", f"c{i}", NOW - RETENTION - timedelta(hours=1))
        for i in range(3)
    ]
    ended_recently = await applied(store, "p-recent", "h-recent", "c1", NOW - timedelta(hours=1))
    running = await applied(store, "p-running", "h-run", "c1", NOW + timedelta(days=30))
    # Running hunts keep locations for as long as they run, however old the scan.
    await move_back(pool, running, RETENTION * 5)
    # No known hunt end (the tag was unknown; or still 'received'): retention after the scan.
    unknown_old = await applied(store, "p-unknown", "h-x", "c1", None, Outcome.UNKNOWN_TAG)
    await move_back(pool, unknown_old, RETENTION + timedelta(minutes=1))
    unknown_new = await applied(store, "p-unknown", "h-x", "c2", None, Outcome.UNKNOWN_TAG)
    received_old = await recorded(store, "p-received", "h-x", "c1")
    await move_back(pool, received_old, RETENTION + timedelta(minutes=1))
    received_new = await recorded(store, "p-received", "h-x", "c2")

    purge, metrics = purger(pool, redis)
    assert await purge.run_once() == 5

    for scan_id in [*ended_long_ago, unknown_old, received_old]:
        assert await location(pool, scan_id) == PURGED
    for scan_id in (ended_recently, running, unknown_new, received_new):
        assert await location(pool, scan_id) == KEPT
    purged = metrics.registry.get_sample_value("scan_locations_purged_total", {"store": "postgres"})
    assert purged == 5
    # What the scan answered survives the purge.
    record = await store.get(ended_long_ago[0])
    assert record.answer.outcome is Outcome.OUT_OF_RANGE and record.location_purged_at
    assert (record.input.lat, record.input.lon, record.input.accuracy_m) == (None, None, None)
    assert record.hunt_ends_at == NOW - RETENTION - timedelta(hours=1)


async def test_the_purge_is_idempotent_batched_and_shared_by_replicas(pool, redis):
    store = ScanStore(pool)
    ended = NOW - RETENTION - timedelta(hours=1)
    for i in range(25):
        await applied(store, f"p{i % 4}", "h-old", f"c{i}", ended)
    one, metrics_one = purger(pool, redis, batch=4)
    two, metrics_two = purger(pool, redis, batch=4)

    assert sum(await asyncio.gather(one.run_once(), two.run_once())) == 25
    assert await one.run_once() == 0 and await two.run_once() == 0
    assert await pool.fetchval("SELECT count(*) FROM scan.scans WHERE lat IS NOT NULL") == 0
    counted = [
        m.registry.get_sample_value("scan_locations_purged_total", {"store": "postgres"}) or 0
        for m in (metrics_one, metrics_two)
    ]
    assert sum(counted) == 25
    runs, units = await work_done(pool, "scan", "location-purge")
    assert units == 25 and runs >= 7  # batches of 4, each row once


async def test_the_last_position_in_redis_never_outlives_the_retention(pool, redis):
    store = ScanStore(pool)
    old_at = NOW - RETENTION - timedelta(hours=2)
    # As wired by the composition root: the TTL is capped at the retention and
    # counted from the scan, so an old position expires at once.
    capped = scan_cache(redis, int(RETENTION.total_seconds()))
    await capped.finish(scan("p-late", "h1", "c1"), None, Position(38.7, -9.1, 5.0, old_at))
    assert await redis.exists(keys.last_scan("p-late")) == 0
    await capped.finish(scan("p-now", "h1", "c1"), None, Position(38.7, -9.1, 5.0, NOW))
    assert 0 < await redis.pttl(keys.last_scan("p-now")) <= RETENTION.total_seconds() * 1000

    # Keys written while the retention was longer are deleted by the purge,
    # for the players whose rows it purged, when they are older than the retention.
    before = scan_cache(redis, 30 * 86400)
    await applied(store, "p-gone", "h-old", "c1", NOW - RETENTION - timedelta(hours=1))
    await before.finish(scan("p-gone", "h1", "c1"), None, Position(38.7, -9.1, 5.0, old_at))
    await applied(store, "p-back", "h-old", "c1", NOW - RETENTION - timedelta(hours=1))
    await before.finish(
        scan("p-back", "h1", "c2"), None, Position(38.7, -9.1, 5.0, NOW)
    )  # plays again
    await before.finish(scan("p-other", "h1", "c1"), None, Position(38.7, -9.1, 5.0, old_at))

    purge, metrics = purger(pool, redis)
    assert await purge.run_once() == 2
    assert await redis.exists(keys.last_scan("p-gone")) == 0
    assert await redis.hget(keys.last_scan("p-back"), "at") == str(int(NOW.timestamp() * 1000))
    assert await redis.exists(keys.last_scan("p-other")) == 1  # no row of theirs was purged
    assert metrics.registry.get_sample_value("scan_locations_purged_total", {"store": "redis"}) == 1


async def test_a_purged_scan_is_not_a_previous_position(pool):
    store = ScanStore(pool)
    first = await applied(store, "p1", "h-old", "c1", NOW - RETENTION - timedelta(hours=1))
    _, previous = await store.insert(new_scan_id(), scan("p1", "h-new", "c2"), LEASE, "")
    assert previous == Position(38.7, -9.1, 5.0, NOW)
    await store.purge_locations(RETENTION, 100)
    assert await location(pool, first) == PURGED
    third, previous = await store.insert(new_scan_id(), scan("p1", "h-new", "c3"), LEASE, "")
    assert previous is None
    assert await store.previous_position("p1", third.scan_id) is None


async def test_the_schema_keeps_location_and_purge_mark_together(pool):
    store = ScanStore(pool)
    scan_id = await recorded(store, "p1", "h1", "c1")
    with pytest.raises(asyncpg.CheckViolationError):
        await pool.execute("UPDATE scan.scans SET lat = NULL WHERE scan_id = $1", scan_id)
    with pytest.raises(asyncpg.CheckViolationError):
        await pool.execute(
            "UPDATE scan.scans SET location_purged_at = now() WHERE scan_id = $1", scan_id
        )
    with pytest.raises(asyncpg.CheckViolationError):
        await pool.execute(
            """UPDATE scan.scans SET lat = NULL, lon = NULL, location_purged_at = now()
               WHERE scan_id = $1""",
            scan_id,
        )
    async with pool.acquire() as connection, connection.transaction():
        await connection.execute("SET LOCAL enable_seqscan = off")
        plan = await connection.fetch(f"EXPLAIN {PURGE_DUE}", RETENTION, 1000)
    assert "scans_location_due" in "\n".join(r[0] for r in plan)


def test_retention_settings_are_validated():
    required = {
        "SCAN_PG_DSN": "postgresql://x/y",
        "SCAN_REDIS_URL": "redis://x",
        "GEO_SERVICE_ADDR": "x:1",
        "SCORE_SERVICE_ADDR": "x:2",
        "AUTH_PEER_TOKEN": "t",
    }
    config = ScanConfig.from_env(required)
    assert (config.location_retention_s, config.purge_interval_s) == (7 * 86400, 300.0)
    with pytest.raises(ConfigError) as err:
        ScanConfig.from_env(
            {**required, "SCAN_LOCATION_RETENTION_S": "0", "SCAN_PURGE_INTERVAL_S": "0.001"}
        )
    assert "SCAN_LOCATION_RETENTION_S" in str(err.value)
    assert "SCAN_PURGE_INTERVAL_S" in str(err.value)


# -- through the services ------------------------------------------------------


@contextlib.asynccontextmanager
async def scan_stack(pg_dsn, redis_urls) -> AsyncIterator[scan_pb2_grpc.ScanServiceStub]:
    """geo, score (with a leaderboard double) and scan in this process; scan
    keeps locations 30 days itself, so only the test's purge purges."""
    leaderboard = await LeaderboardDouble().start()
    try:
        async with (
            geo_service(pg_dsn, redis_urls["geo"]) as geo,
            score_service(pg_dsn, redis_urls["score"], leaderboard.address) as score,
        ):
            # Started long ago: a scan moved back in time is still in its window.
            await create_hunt(geo, "h1", starts_at=datetime.now(UTC) - timedelta(days=10))
            await upsert_checkpoint(geo, "c1", hunt_id="h1", tag_id="t1")
            async with in_process(
                "scan",
                SCAN_PG_DSN=pg_dsn,
                SCAN_REDIS_URL=redis_urls["scan"],
                GEO_SERVICE_ADDR=f"127.0.0.1:{geo.runtime.port}",
                SCORE_SERVICE_ADDR=f"127.0.0.1:{score.port}",
                SCAN_RELAY_INTERVAL_S="0.05",
                SCAN_LOCATION_RETENTION_S=str(30 * 86400),
            ) as runtime:
                channel = grpc.aio.insecure_channel(f"127.0.0.1:{runtime.port}")
                try:
                    yield scan_pb2_grpc.ScanServiceStub(channel)
                finally:
                    await channel.close()
    finally:
        await leaderboard.stop()


CLIENT = bearer(CLIENT_TOKEN)


async def test_a_purged_scan_reads_back_without_its_location(pg_dsn, redis_urls, pool, redis):
    async with scan_stack(pg_dsn, redis_urls) as stub:
        reply = await stub.SubmitScan(
            scan_pb2.SubmitScanRequest(
                player_id="p1",
                hunt_id="h1",
                tag_id="t1",
                location=common_pb2.GeoPoint(lat=ORIGIN[0], lon=ORIGIN[1]),
                accuracy_m=5.0,
                scanned_at=timestamp(datetime.now(UTC)),
                client_scan_id="c1",
            ),
            metadata=CLIENT,
            timeout=10,
        )
        assert reply.outcome == scan_pb2.SCAN_OUTCOME_UNLOCKED
        # The flow recorded the hunt's end (tools.inprocess.hunt_message: 5 hours from now).
        ends = await pool.fetchval(
            "SELECT hunt_ends_at FROM scan.scans WHERE scan_id = $1", reply.scan_id
        )
        assert timedelta(hours=4) < ends - datetime.now(UTC) <= timedelta(hours=5)

        # The hunt ended more than the retention ago.
        await pool.execute(
            "UPDATE scan.scans SET hunt_ends_at = now() - interval '2 days' WHERE scan_id = $1",
            reply.scan_id,
        )
        purge, _ = purger(pool, redis)
        assert await purge.run_once() == 1

        got = (
            await stub.GetScan(
                scan_pb2.GetScanRequest(scan_id=reply.scan_id), metadata=CLIENT, timeout=10
            )
        ).scan
        assert not got.HasField("location") and got.accuracy_m == 0
        assert got.outcome == scan_pb2.SCAN_OUTCOME_UNLOCKED and got.points_awarded == 15
        listed = await stub.ListPlayerScans(
            scan_pb2.ListPlayerScansRequest(player_id="p1"), metadata=CLIENT, timeout=10
        )
        assert [s.scan_id for s in listed.scans] == [reply.scan_id]
        assert not listed.scans[0].HasField("location")


async def test_a_scan_that_lost_its_location_before_it_was_applied_is_settled(
    pg_dsn, redis_urls, pool, redis
):
    store = ScanStore(pool)
    scan_id = (await store.insert(new_scan_id(), scan("p2", "h1", "c1"), timedelta(0), ""))[
        0
    ].scan_id
    await move_back(pool, scan_id, RETENTION + timedelta(minutes=1))
    purge, _ = purger(pool, redis)
    assert await purge.run_once() == 1
    async with scan_stack(pg_dsn, redis_urls) as stub:

        async def scan_now() -> scan_pb2.Scan:
            return (
                await stub.GetScan(
                    scan_pb2.GetScanRequest(scan_id=scan_id), metadata=CLIENT, timeout=10
                )
            ).scan

        got = await eventually(  # the relay drives it within its interval
            scan_now,
            until=lambda current: current.status == scan_pb2.SCAN_STATUS_APPLIED,
            timeout_s=20,
            interval_s=0.05,
            what="the relay to apply the scan that lost its location",
        )
    assert got.outcome == scan_pb2.SCAN_OUTCOME_HUNT_NOT_ACTIVE and got.points_awarded == 0
    assert not got.HasField("location")
