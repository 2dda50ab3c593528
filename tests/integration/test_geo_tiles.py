"""Map tiles: PutTile, GetTile from the materialized view, RefreshTiles under
the advisory lock, and reads that a refresh never blocks."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC

import asyncpg
import grpc
import pytest

from tests.support.geo import create_hunt, status_of
from tests.support.polling import eventually
from tests.support.rpcerrors import bad_fields, error_info, refused
from tests.support.worklog import work_done
from tools.inprocess import geo_service
from treasure.geo.v1 import geo_pb2


@pytest.fixture
async def geo(pg_dsn, redis_urls):
    async with geo_service(pg_dsn, redis_urls["geo"]) as running:
        await create_hunt(running, "h1", columns=100, rows=100)
        yield running


async def get_tile(geo, x=0, y=0, known_version=0, hunt_id="h1") -> geo_pb2.GetTileResponse:
    return await geo.client.GetTile(
        geo_pb2.GetTileRequest(hunt_id=hunt_id, x=x, y=y, known_version=known_version)
    )


async def put_tile(geo, data: bytes, version: int, x=0, y=0, **extra) -> int:
    reply = await geo.admin.PutTile(
        geo_pb2.PutTileRequest(hunt_id="h1", x=x, y=y, data=data, version=version, **extra)
    )
    return reply.stored_version


async def refresh(geo) -> geo_pb2.RefreshTilesResponse:
    return await geo.admin.RefreshTiles(geo_pb2.RefreshTilesRequest(hunt_id="h1"))


async def test_a_tile_is_visible_after_a_refresh(geo):
    assert await put_tile(geo, b"v1", 1) == 1
    assert await status_of(get_tile(geo)) == grpc.StatusCode.NOT_FOUND  # not in the view yet

    first = await refresh(geo)
    assert first.refreshed
    tile = await get_tile(geo)
    assert (tile.version, tile.data, tile.content_type) == (1, b"v1", "application/octet-stream")
    assert not tile.not_modified and tile.view_refreshed_at == first.refreshed_at
    held = await get_tile(geo, known_version=1)
    assert held.not_modified and held.version == 1 and held.data == b""

    # A newer version stays invisible until the next refresh.
    assert await put_tile(geo, b"v2", 2, content_type="image/png") == 2
    assert (await get_tile(geo)).data == b"v1"
    # A lower version changes nothing.
    assert await put_tile(geo, b"v0", 1) == 2

    second = await refresh(geo)
    assert second.refreshed and second.refreshed_at.ToDatetime() > first.refreshed_at.ToDatetime()
    tile = await get_tile(geo, known_version=1)
    assert (tile.version, tile.data, tile.content_type) == (2, b"v2", "image/png")
    assert not tile.not_modified and tile.view_refreshed_at == second.refreshed_at

    assert await status_of(get_tile(geo, x=5, y=5)) == grpc.StatusCode.NOT_FOUND
    assert await status_of(get_tile(geo, hunt_id="nope")) == grpc.StatusCode.NOT_FOUND
    # The gauge is the time since the newest refresh this geo saw: the second one.
    refreshed = second.refreshed_at.ToDatetime(tzinfo=UTC).timestamp()
    at_least = time.time() - refreshed
    age = geo.runtime.metrics.registry.get_sample_value("geo_tile_view_age_seconds")
    at_most = time.time() - refreshed
    assert age is not None and at_least - 0.001 <= age <= at_most + 0.001, (at_least, age)


async def test_tiles_are_cached_in_process_only_when_small(pg_dsn, redis_urls):
    async with geo_service(pg_dsn, redis_urls["geo"], GEO_TILE_CACHE_MAX_TILE_BYTES="1024") as geo:
        await create_hunt(geo, "h1")
        await put_tile(geo, b"s" * 1024, 1, x=0)
        await put_tile(geo, b"L" * 1025, 1, x=1)
        await refresh(geo)
        queries = geo.queries("get_tile")
        for _ in range(3):
            assert len((await get_tile(geo, x=0)).data) == 1024
            assert len((await get_tile(geo, x=1)).data) == 1025
        assert geo.queries("get_tile") - queries == 1 + 3


async def test_two_concurrent_refreshes_run_one(geo, pg_dsn, redis_urls):
    await put_tile(geo, b"v1", 1)
    async with geo_service(pg_dsn, redis_urls["geo"]) as other:
        blocker = await asyncpg.connect(pg_dsn)
        before, _ = await work_done(blocker, "geo", "tile-refresh")
        try:
            # Hold the refresh that gets the advisory lock inside its REFRESH.
            transaction = blocker.transaction()
            await transaction.start()
            await blocker.execute("LOCK TABLE geo.hunt_tiles IN ACCESS EXCLUSIVE MODE")
            calls = [asyncio.ensure_future(refresh(g)) for g in (geo, other)]
            done, pending = await asyncio.wait(calls, return_when=asyncio.FIRST_COMPLETED)
            assert [task.result().refreshed for task in done] == [False]
            await transaction.rollback()
            late = await asyncio.wait_for(next(iter(pending)), 30)
            # Counted in Postgres: of the two, one refresh ran.
            assert await work_done(blocker, "geo", "tile-refresh") == (before + 1, before + 1)
        finally:
            await blocker.close()
        assert late.refreshed
        assert (await get_tile(other)).data == b"v1"


async def _until_refresh_waits_for_a_lock(dsn: str) -> None:
    # Its own connection: inside a transaction pg_stat_activity is a snapshot.
    connection = await asyncpg.connect(dsn)
    try:
        await _poll_activity(connection)
    finally:
        await connection.close()


async def _poll_activity(connection: asyncpg.Connection) -> None:
    await eventually(
        lambda: connection.fetchval(
            """SELECT count(*) FROM pg_stat_activity
               WHERE query LIKE 'REFRESH MATERIALIZED VIEW CONCURRENTLY%'
                 AND wait_event_type = 'Lock' AND datname = current_database()"""
        ),
        timeout_s=30,
        interval_s=0.01,
        what="the refresh to reach its REFRESH statement",
    )


async def test_get_tile_is_not_blocked_by_a_refresh_of_a_large_view(geo, pg_dsn):
    setup = await asyncpg.connect(pg_dsn)
    try:
        await setup.execute(
            """INSERT INTO geo.hunt_tiles (hunt_id, x, y, version, content_type, data)
               SELECT 'h1', x, y, 1, 'image/png', decode(repeat(md5(x || ':' || y), 64), 'hex')
               FROM generate_series(0, 99) x, generate_series(0, 59) y"""
        )
    finally:
        await setup.close()
    await refresh(geo)
    assert (await get_tile(geo, 7, 7)).version == 1
    await put_tile(geo, b"new", 2, x=3, y=4)

    blocker = await asyncpg.connect(pg_dsn)
    try:
        transaction = blocker.transaction()
        await transaction.start()
        await blocker.execute("LOCK TABLE geo.hunt_tiles IN ACCESS EXCLUSIVE MODE")
        running = asyncio.ensure_future(refresh(geo))
        # Wait until the refresh holds the view and waits inside REFRESH.
        await _until_refresh_waits_for_a_lock(pg_dsn)
        # Reads of tiles not in this process's cache go to the view, unhindered.
        during = await asyncio.wait_for(get_tile(geo, 3, 4), 10)
        others = await asyncio.wait_for(get_tile(geo, 50, 50), 10)
        assert during.version == 1 and others.version == 1
        assert not running.done()
        await transaction.rollback()
        assert (await asyncio.wait_for(running, 60)).refreshed
    finally:
        await blocker.close()
    assert (await get_tile(geo, 3, 4)).data == b"new"


async def test_a_refresh_carries_the_cached_tiles_over_in_one_query(geo):
    for x in range(5):
        await put_tile(geo, f"v1-{x}".encode(), 1, x=x)
    await refresh(geo)
    for x in range(6):  # (5, 0) is not in the view: its absence is cached too
        await (get_tile(geo, x=x) if x < 5 else status_of(get_tile(geo, x=x)))
    await put_tile(geo, b"v2-0", 2, x=0)
    await put_tile(geo, b"v1-5", 1, x=5)
    reads, carries = geo.queries("get_tile"), geo.queries("tile_versions")

    await refresh(geo)
    # One query for the six cached cells; the two that changed are read again.
    tiles = [await get_tile(geo, x=x) for x in range(6)]
    assert [(t.version, t.data) for t in tiles] == [(2, b"v2-0")] + [
        (1, f"v1-{x}".encode()) for x in range(1, 6)
    ]
    assert {t.view_refreshed_at.ToDatetime() for t in tiles} == {
        tiles[0].view_refreshed_at.ToDatetime()
    }  # every answer is of the new refresh
    assert geo.queries("tile_versions") - carries == 1
    assert geo.queries("get_tile") - reads == 2
    kept = geo.runtime.metrics.registry.get_sample_value(
        "geo_tile_cache_carried_total", {"result": "kept"}
    )
    assert kept == 4


async def test_another_replicas_refresh_reaches_the_cache_within_the_poll(pg_dsn, redis_urls):
    async with (
        geo_service(pg_dsn, redis_urls["geo"], GEO_TILE_VIEW_POLL_S="0.1") as geo,
        geo_service(pg_dsn, redis_urls["geo"]) as other,
    ):
        await create_hunt(geo, "h1")
        await put_tile(geo, b"v1", 1)
        await refresh(geo)
        assert (await get_tile(geo)).data == b"v1"
        await put_tile(geo, b"v2", 2)
        assert (await get_tile(geo)).data == b"v1"  # cached, and the view's anyway
        await refresh(other)
        # The poll sees the other replica's refresh: the cached copy is not served any more.
        seen = await eventually(
            lambda: get_tile(geo), until=lambda t: t.version == 2, timeout_s=2,
            what="the other replica's refresh to reach geo's tile cache",
        )  # fmt: skip
        assert seen.data == b"v2"


async def get_tiles(geo, *cells: tuple[int, int, int], hunt_id="h1") -> geo_pb2.GetTilesResponse:
    refs = [geo_pb2.TileRef(x=x, y=y, known_version=known) for x, y, known in cells]
    return await geo.client.GetTiles(geo_pb2.GetTilesRequest(hunt_id=hunt_id, cells=refs))


async def test_get_tiles_answers_each_cell_with_only_what_the_caller_lacks(geo):
    await put_tile(geo, b"a1", 1, x=0)
    await put_tile(geo, b"b2", 2, x=1, content_type="image/png")
    refreshed = await refresh(geo)
    before = geo.queries("get_tiles"), geo.queries("get_tile")
    reply = await get_tiles(geo, (1, 0, 0), (0, 0, 1), (2, 0, 0), (1, 1, 7))
    # Nothing cached yet: the four cells in one query, none alone.
    assert (geo.queries("get_tiles"), geo.queries("get_tile")) == (before[0] + 1, before[1])
    answers = [(t.x, t.y, t.found, t.not_modified, t.version, t.data, t.content_type)
               for t in reply.tiles]  # fmt: skip
    assert answers == [
        (1, 0, True, False, 2, b"b2", "image/png"),
        (0, 0, True, True, 1, b"", "application/octet-stream"),
        (2, 0, False, False, 0, b"", ""),  # no tile in the view: an answer, not an error
        (1, 1, False, False, 0, b"", ""),
    ]
    assert reply.view_refreshed_at == refreshed.refreshed_at
    # Cached now: a second look costs no query, however many cells.
    queries = geo.queries("get_tile")
    again = await get_tiles(geo, (0, 0, 1), (1, 0, 2), (2, 0, 0))
    assert [(t.found, t.not_modified) for t in again.tiles] == [
        (True, True),
        (True, True),
        (False, False),
    ]
    assert geo.queries("get_tile") == queries


@pytest.mark.parametrize(
    ("cells", "field"),
    [
        ([], "cells"),
        ([(x, 0, 0) for x in range(65)], "cells"),
        ([(0, 0, 0), (3, 3, 0), (0, 0, 1)], "cells[2]"),
        ([(0, 0, 0), (-1, 0, 0)], "cells[1].x"),
        ([(0, -2, 0)], "cells[0].y"),
        ([(0, 0, -1)], "cells[0].known_version"),
        ([(0, 0, 0), (0, 100, 0)], "cells[1].y"),  # off the grid (100 rows)
    ],
)
async def test_get_tiles_refuses_a_bad_cell_list_whole(geo, cells, field):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await get_tiles(geo, *cells)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(err.value) == [field]


async def test_get_tiles_of_an_unknown_hunt_is_not_found(geo):
    assert await status_of(get_tiles(geo, (0, 0, 0), hunt_id="nope")) == grpc.StatusCode.NOT_FOUND


async def test_get_tiles_refuses_an_answer_larger_than_a_message(geo):
    big = 250 * 1024  # PutTile takes up to 256 KiB; one answer carries about 1 MiB
    for x in range(5):
        await put_tile(geo, bytes([x]) * big, 1, x=x)
    await refresh(geo)
    err = await refused(get_tiles(geo, *((x, 0, 0) for x in range(5))))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_info(err).reason == "ANSWER_TOO_LARGE"
    # Fewer cells fit, and the tiles the caller holds cost nothing.
    assert [len(t.data) for t in (await get_tiles(geo, (0, 0, 0), (1, 0, 0))).tiles] == [big, big]
    held = await get_tiles(geo, *((x, 0, 1) for x in range(5)))
    assert [t.not_modified for t in held.tiles] == [True] * 5
