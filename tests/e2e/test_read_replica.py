"""The Postgres read replica (libs.pgreads), against a real streaming
standby: a private primary and a standby made from it by `pg_basebackup -R`,
both started by the test. The whole stack runs on the primary, with scan and
geo given the standby as `<SVC>_PG_READ_DSN`:
- while the standby keeps up, their stale-tolerant reads are served by it;
- while its replay is paused and it falls behind past the bound, the reads go
  to the primary, and the metrics say so;
- while it is down, the reads go to the primary and nothing fails;
- GetScan right after SubmitScan finds the scan, applied, even while the
  standby lags (read-your-writes: a scan the standby does not have, or has not
  seen applied, is read again on the primary), and no read returns an older
  answer than the client was given.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest

from libs.pgreads import ReadRoute
from tests.support import faults
from tests.support.hunts import ADMIN, create_hunt, spots
from tests.support.infra import RUN_DIR
from tests.support.polling import eventually
from tests.support.services import scrape_metrics
from tests.support.stack import CLIENT, Stack
from tools.localinfra import PrivatePostgres, PrivateStandby, create_database, free_port
from treasure.geo.v1 import geo_pb2
from treasure.scan.v1 import scan_pb2, scan_pb2_grpc

pytestmark = pytest.mark.timeout(300)

MAX_LAG_S = 0.5


class Cluster:
    def __init__(self, primary: PrivatePostgres, standby: PrivateStandby, database: str) -> None:
        self.primary = primary
        self.standby = standby
        self.database = database

    @property
    def primary_dsn(self) -> str:
        return self.primary.dsn.rsplit("/", 1)[0] + f"/{self.database}"

    @property
    def standby_dsn(self) -> str:
        return self.standby.dsn_of(self.database)

    async def on_standby(self, query: str) -> object:
        connection = await asyncpg.connect(self.standby_dsn)
        try:
            return await connection.fetchval(query)
        finally:
            await connection.close()


@pytest.fixture(scope="module")
async def cluster() -> AsyncIterator[Cluster]:
    root = RUN_DIR / f"read-replica-{uuid.uuid4().hex[:8]}"
    primary = PrivatePostgres(root / "primary", free_port())
    standby = PrivateStandby(root / "standby", free_port(), primary=primary)
    try:
        await asyncio.to_thread(primary.start)
        await create_database(primary.dsn, "reads")
        await asyncio.to_thread(standby.start)
        yield Cluster(primary, standby, "reads")
    finally:
        await asyncio.to_thread(standby.stop)
        await asyncio.to_thread(primary.stop)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
async def stack(cluster: Cluster) -> AsyncIterator[Stack]:
    running = Stack(
        RUN_DIR / f"read-replica-stack-{uuid.uuid4().hex[:8]}",
        cluster.primary_dsn,
        SCAN_PG_READ_DSN=cluster.standby_dsn,
        GEO_PG_READ_DSN=cluster.standby_dsn,
        SCAN_PG_READ_MAX_LAG_S=str(MAX_LAG_S),
        GEO_PG_READ_MAX_LAG_S=str(MAX_LAG_S),
        SCAN_RATE_LIMIT="1000",
    )
    try:
        await running.start()
        yield running
    finally:
        await running.stop()


# -- the route on its own -------------------------------------------------------------


async def test_the_route_serves_from_the_standby_and_falls_back(cluster: Cluster):
    primary = await asyncpg.create_pool(cluster.primary_dsn, min_size=1, max_size=2)
    standby = await asyncpg.create_pool(cluster.standby_dsn, min_size=0, max_size=2)
    route = ReadRoute(primary, standby, max_lag_s=MAX_LAG_S, interval_s=0.1)

    async def served_by_standby() -> bool:
        row = await route.fetchrow("SELECT pg_is_in_recovery() AS standby")
        assert row is not None
        return bool(row["standby"])

    try:
        assert await route.measure() == 0.0
        assert await served_by_standby()
        # The standby stops replaying; the primary goes on writing.
        await standby.execute("SELECT pg_wal_replay_pause()")
        try:
            await primary.execute("CREATE TABLE IF NOT EXISTS public.ticks (at timestamptz)")
            for _ in range(10):
                await primary.execute("INSERT INTO public.ticks VALUES (now())")
                await asyncio.sleep(0.1)
            lag = await route.measure()
            assert lag is not None and lag > MAX_LAG_S, lag
            assert not await served_by_standby(), "a standby past its lag bound served a read"
        finally:
            await standby.execute("SELECT pg_wal_replay_resume()")
        await eventually(route.measure, until=lambda lag: lag == 0.0, what="the standby caught up")
        assert await served_by_standby()
    finally:
        await primary.close()
        await standby.close()


# -- the services ---------------------------------------------------------------------


async def _reads(stack: Stack, service: str) -> dict[str, float]:
    metrics = await asyncio.to_thread(scrape_metrics, stack.metrics_ports[service])
    return {k: v for k, v in metrics.items() if k.startswith(("pg_reads_total", "pg_read_"))}


def _count(reads: dict[str, float], pool: str, reason: str) -> float:
    return reads.get(f'pg_reads_total{{pool="{pool}",reason="{reason}"}}', 0.0)


async def _scan(stack: Stack, hunt_id: str, spot, player_id: str) -> scan_pb2.SubmitScanResponse:
    return await faults.scan_once(stack.target("scan"), hunt_id, spot, player_id)


async def test_scan_reads_go_to_the_standby_and_never_answer_older(stack: Stack, cluster: Cluster):
    hunt_id = f"reads-{uuid.uuid4().hex[:8]}"
    cps = spots(hunt_id, 3, spacing_m=faults.SPACING_M)
    await create_hunt(stack.geo(), hunt_id, cps)
    scans = scan_pb2_grpc.ScanServiceStub(stack.channel("scan"))
    await eventually(
        lambda: _reads(stack, "scan"),
        until=lambda r: r.get("pg_read_replica_in_use") == 1.0,
        what="scan to use its read replica",
    )

    # Caught up: a scan, then its reads; the history comes from the standby.
    first = await _scan(stack, hunt_id, cps[0], "p-reads")
    before = await _reads(stack, "scan")

    async def listed() -> list[str]:
        page = await scans.ListPlayerScans(
            scan_pb2.ListPlayerScansRequest(player_id="p-reads", hunt_id=hunt_id), metadata=CLIENT
        )
        return [s.scan_id for s in page.scans]

    await eventually(listed, until=lambda ids: ids == [first.scan_id], what="the history")
    after = await _reads(stack, "scan")
    assert _count(after, "standby", "replica") > _count(before, "standby", "replica")

    # The standby stops replaying: GetScan right after SubmitScan still finds
    # the scan, applied, with the answer the client was given.
    await cluster.on_standby("SELECT pg_wal_replay_pause()")
    try:
        second = await _scan(stack, hunt_id, cps[1], "p-reads")
        assert second.outcome == scan_pb2.SCAN_OUTCOME_UNLOCKED
        got = await scans.GetScan(scan_pb2.GetScanRequest(scan_id=second.scan_id), metadata=CLIENT)
        assert got.scan.outcome == second.outcome
        assert got.scan.total_points == second.total_points
        # Past the bound the reads go to the primary, and the metrics say why.
        reads = await eventually(
            lambda: _reads(stack, "scan"),
            until=lambda r: r.get("pg_read_replica_in_use") == 0.0,
            what="scan to stop using a standby that lags",
        )
        assert reads["pg_read_replica_lag_seconds"] > MAX_LAG_S
        assert await listed() == [second.scan_id, first.scan_id]
        assert _count(await _reads(stack, "scan"), "primary", "lagging") > 0
        assert _count(await _reads(stack, "scan"), "primary", "not_fresh") > 0
    finally:
        await cluster.on_standby("SELECT pg_wal_replay_resume()")
    await eventually(
        lambda: _reads(stack, "scan"),
        until=lambda r: r.get("pg_read_replica_in_use") == 1.0,
        what="scan to use its read replica again once it caught up",
    )


async def test_reads_go_to_the_primary_while_the_standby_is_down(stack: Stack, cluster: Cluster):
    hunt_id = f"reads-down-{uuid.uuid4().hex[:8]}"
    cps = spots(hunt_id, 2, spacing_m=faults.SPACING_M)
    await create_hunt(stack.geo(), hunt_id, cps)
    scans = scan_pb2_grpc.ScanServiceStub(stack.channel("scan"))
    await asyncio.to_thread(cluster.standby.stop)
    try:
        await eventually(
            lambda: _reads(stack, "scan"),
            until=lambda r: r.get("pg_read_replica_lag_seconds") == -1.0,
            what="scan to see its read replica down",
        )
        answer = await _scan(stack, hunt_id, cps[0], "p-down")
        got = await scans.GetScan(scan_pb2.GetScanRequest(scan_id=answer.scan_id), metadata=CLIENT)
        assert got.scan.scan_id == answer.scan_id
        page = await scans.ListPlayerScans(
            scan_pb2.ListPlayerScansRequest(player_id="p-down", hunt_id=hunt_id), metadata=CLIENT
        )
        assert [s.scan_id for s in page.scans] == [answer.scan_id]
        assert _count(await _reads(stack, "scan"), "primary", "replica_down") > 0
        hunt = await stack.geo().GetHunt(geo_pb2.GetHuntRequest(hunt_id=hunt_id), metadata=CLIENT)
        assert hunt.hunt.hunt_id == hunt_id
    finally:
        await asyncio.to_thread(cluster.standby.start)
    for service in ("scan", "geo"):
        await eventually(
            lambda service=service: _reads(stack, service),
            until=lambda r: r.get("pg_read_replica_in_use") == 1.0,
            what=f"{service} to use its read replica again",
        )


async def test_tiles_come_from_the_standby_never_older_than_seen(stack: Stack, cluster: Cluster):
    """A tile put and the view refreshed while the standby lags: geo has seen
    the newer view, so a read the standby would answer from the older one is
    read again on the primary, and the client never gets the older version."""
    hunt_id = f"reads-tiles-{uuid.uuid4().hex[:8]}"
    await create_hunt(stack.geo(), hunt_id, spots(hunt_id, 1, spacing_m=faults.SPACING_M))
    geo = stack.geo()

    async def put(version: int) -> None:
        await geo.PutTile(
            geo_pb2.PutTileRequest(
                hunt_id=hunt_id, x=0, y=0, data=b"v%d" % version, version=version
            ),
            metadata=ADMIN,
        )
        await geo.RefreshTiles(geo_pb2.RefreshTilesRequest(hunt_id=hunt_id), metadata=ADMIN)

    async def version(x: int = 0) -> int:
        try:
            reply = await geo.GetTile(
                geo_pb2.GetTileRequest(hunt_id=hunt_id, x=x, y=0), metadata=CLIENT
            )
        except grpc.aio.AioRpcError as err:
            if err.code() != grpc.StatusCode.NOT_FOUND:
                raise
            return 0
        return reply.version

    await eventually(
        lambda: _reads(stack, "geo"),
        until=lambda r: r.get("pg_read_replica_in_use") == 1.0,
        what="geo to use its read replica",
    )
    await put(1)
    assert await version() == 1
    # Cells read for the first time (not in geo's cache) once the standby has the view.
    before = await _reads(stack, "geo")
    for x in range(1, 6):
        await asyncio.sleep(0.2)
        assert await version(x) == 0
    after = await _reads(stack, "geo")
    assert _count(after, "standby", "replica") > _count(before, "standby", "replica")

    await cluster.on_standby("SELECT pg_wal_replay_pause()")
    try:
        await put(2)
        seen = [await version() for _ in range(5)]
        assert seen == [2] * 5, f"an older tile than geo had seen: {seen}"
        reads = await _reads(stack, "geo")
        assert _count(reads, "primary", "not_fresh") + _count(reads, "primary", "lagging") > 0
    finally:
        await cluster.on_standby("SELECT pg_wal_replay_resume()")
