"""Leaderboard rebuilds from a real gRPC ScoreService double: after FLUSHALL
the board equals the source exactly; no partial board is ever served; submits
during a rebuild are kept; failures leave no temporary keys; reconciliation
repairs drift; at maxmemory submits answer RESOURCE_EXHAUSTED and nothing is
lost once memory is raised; the same on a 3-master Redis Cluster."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

import grpc
import pytest
import redis.asyncio as aioredis

from libs import errors, rediskit
from libs.timestamps import now_ms
from services.leaderboard import keys
from tests.support.infra import REPO, RUN_DIR, flush
from tests.support.leaderboard import (
    FakeScores,
    Stubs,
    expected,
    leaderboard,
    rows,
    serve_scores,
    update,
    whole_board,
)
from tests.support.polling import eventually
from tests.support.rpcerrors import refused, retry_info
from tools.doubles import FakeCatalog
from tools.inprocess import hunt_message
from tools.localinfra import RedisCluster, RedisServer, free_port
from treasure.geo.v1 import geo_pb2
from treasure.leaderboard.v1 import leaderboard_pb2 as pb

HUNT = "h9"
DAY_MS = 86_400_000


def fill(fake: FakeScores, hunt: str, n: int, seed: int = 1) -> dict[str, tuple[int, int]]:
    """n players with random totals (many ties) in the double; the expected board."""
    rng = random.Random(seed)
    base = now_ms() - 5 * DAY_MS
    board = {}
    for i in range(n):
        player = f"pl-{i:05d}"
        total, reached = rng.randrange(0, 300), base + rng.randrange(0, 4 * DAY_MS)
        fake.put(hunt, player, total, reached, version=rng.randrange(1, 50))
        board[player] = (total, reached)
    return board


async def served(lb: Stubs, hunt: str) -> bool:
    try:
        await lb.stub.GetTop(pb.GetTopRequest(hunt_id=hunt, limit=1), metadata=lb.client)
    except grpc.aio.AioRpcError as err:
        assert err.code() == grpc.StatusCode.UNAVAILABLE
        return False
    return True


async def leftovers(redis_url: str, hunt: str) -> list[str]:
    """Rebuild keys (lock, temporary board) still in Redis (on every master)."""
    client = rediskit.connect(redis_url)
    try:
        found = [k async for k in client.scan_iter(match=f"lb:{{{hunt}}}:tmp*")]
        if await client.exists(keys.build_lock(hunt)):
            found.append(keys.build_lock(hunt))
        return found
    finally:
        await client.aclose()


@pytest.fixture
async def scores():
    fake = FakeScores()
    async with serve_scores(fake) as address:
        yield fake, address


@pytest.fixture
async def lb(redis_urls, scores):
    async with leaderboard(
        redis_urls["leaderboard"], scores[1], LEADERBOARD_REBUILD_PAGE_SIZE="300"
    ) as stubs:
        yield stubs


async def test_after_flushall_the_rebuilt_board_equals_the_source(lb, scores, redis_urls):
    fake, _ = scores
    source = fill(fake, HUNT, 2500)
    # The first read builds the missing board within its deadline.
    top = await lb.stub.GetTop(pb.GetTopRequest(hunt_id=HUNT), metadata=lb.client, timeout=5)
    assert top.player_count == 2500
    assert rows(await whole_board(lb, HUNT)) == expected(source)

    await flush(redis_urls["leaderboard"])
    rank = await lb.stub.GetRank(
        pb.GetRankRequest(hunt_id=HUNT, player_id="pl-00001"), metadata=lb.client, timeout=5
    )
    assert rank.player_count == 2500
    assert rows(await whole_board(lb, HUNT)) == expected(source)
    assert await leftovers(redis_urls["leaderboard"], HUNT) == []
    assert lb.metric("leaderboard_rebuilds_total", {"outcome": "ok"}) == 2
    assert fake.streams == 2  # single flight: one rebuild per miss, however many reads


async def test_a_missing_board_is_never_served_partially_nor_written(lb, scores, redis_urls):
    fake, _ = scores
    source = fill(fake, HUNT, 900)  # three pages of 300
    fake.gate = asyncio.Event()
    rebuild = asyncio.ensure_future(
        lb.stub.RebuildBoard(pb.RebuildBoardRequest(hunt_id=HUNT), metadata=lb.admin)
    )
    await fake.paused.wait()  # one page is in the temporary board
    err = await refused(
        lb.stub.GetTop(pb.GetTopRequest(hunt_id=HUNT), metadata=lb.client, timeout=0.5)
    )
    assert err.code() == grpc.StatusCode.UNAVAILABLE and retry_info(err) is not None
    # a submit cannot land on a board that does not exist: the outbox keeps it
    late = update(HUNT, "late", 5, now_ms())
    with pytest.raises(errors.Unavailable):
        await lb.submitter.submit_scores([late], timeout_s=0.5)
    fake.gate.set()
    assert (await rebuild).player_count == 900
    assert (await lb.submitter.submit_scores([late])).applied == 1  # the outbox's retry
    source["late"] = (5, late_ms(late))
    assert rows(await whole_board(lb, HUNT)) == expected(source)
    assert await leftovers(redis_urls["leaderboard"], HUNT) == []


async def test_submits_during_a_rebuild_of_a_live_board_are_kept(lb, scores, redis_urls):
    fake, _ = scores
    source = fill(fake, HUNT, 900)
    await lb.stub.RebuildBoard(pb.RebuildBoardRequest(hunt_id=HUNT), metadata=lb.admin)
    fake.gate = asyncio.Event()
    rebuild = asyncio.ensure_future(
        lb.stub.RebuildBoard(pb.RebuildBoardRequest(hunt_id=HUNT), metadata=lb.admin)
    )
    await fake.paused.wait()
    # pl-00899 is not streamed yet (the stream will bring an older version);
    # pl-00000 was streamed already; "new" is unknown to the stream
    t = now_ms()
    result = await lb.submitter.submit_scores(
        [
            update(HUNT, "pl-00899", 10_000, t, version=1000),
            update(HUNT, "pl-00000", 9_000, t, version=1000),
            update(HUNT, "new", 1, t),
        ]
    )
    assert (result.applied, result.stale) == (3, 0)
    fake.gate.set()
    assert (await rebuild).player_count == 901
    stale = await lb.submitter.submit_scores([update(HUNT, "pl-00001", 0, t, version=1)])
    assert (stale.applied, stale.stale) == (0, 1)  # streamed versions are >= 1
    source.update({"pl-00899": (10_000, t), "pl-00000": (9_000, t), "new": (1, t)})
    await asyncio.sleep(0.3)  # past the GetTop cache
    assert rows(await whole_board(lb, HUNT)) == expected(source)
    assert await leftovers(redis_urls["leaderboard"], HUNT) == []


def late_ms(u) -> int:
    return int(u.reached_at.timestamp() * 1000)


async def test_a_forced_rebuild_keeps_serving_the_old_board_until_it_swaps(lb, scores):
    fake, _ = scores
    old = fill(fake, HUNT, 700, seed=2)
    await lb.stub.RebuildBoard(pb.RebuildBoardRequest(hunt_id=HUNT), metadata=lb.admin)
    new = fill(fake, HUNT, 700, seed=3)  # drift: every total differs now
    fake.gate = asyncio.Event()
    rebuild = asyncio.ensure_future(
        lb.stub.RebuildBoard(pb.RebuildBoardRequest(hunt_id=HUNT), metadata=lb.admin)
    )
    await fake.paused.wait()
    assert rows(await whole_board(lb, HUNT)) == expected(old)  # complete, never partial
    fake.gate.set()
    reply = await rebuild
    assert reply.player_count == 700 and reply.took.ToNanoseconds() > 0
    await asyncio.sleep(0.3)  # past the GetTop cache's 200 ms
    assert rows(await whole_board(lb, HUNT)) == expected(new)


async def test_a_failed_rebuild_leaves_nothing_behind(lb, scores, redis_urls):
    fake, _ = scores
    fill(fake, HUNT, 1000)
    fake.fail_after_pages = 2
    err = await refused(
        lb.stub.RebuildBoard(pb.RebuildBoardRequest(hunt_id=HUNT), metadata=lb.admin)
    )
    assert err.code() == grpc.StatusCode.UNAVAILABLE and "score" in err.details()
    assert await leftovers(redis_urls["leaderboard"], HUNT) == []
    assert not await served(lb, HUNT)  # still missing: no partial board
    fake.fail_after_pages = None
    fake.down = True
    err = await refused(
        lb.stub.RebuildBoard(pb.RebuildBoardRequest(hunt_id=HUNT), metadata=lb.admin)
    )
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    # a submit while score is down: the board cannot be built, the caller keeps its rows
    with pytest.raises(errors.Unavailable):
        await lb.submitter.submit_scores([update(HUNT, "p", 1, now_ms())])
    assert await leftovers(redis_urls["leaderboard"], HUNT) == []
    assert lb.metric("leaderboard_rebuilds_total", {"outcome": "failed"}) >= 2


async def test_reconciliation_repairs_drift(redis_urls, scores):
    fake, address = scores
    fill(fake, HUNT, 200, seed=4)
    async with leaderboard(redis_urls["leaderboard"], address, LEADERBOARD_RECONCILE_S="0.3") as lb:
        await lb.stub.RebuildBoard(pb.RebuildBoardRequest(hunt_id=HUNT), metadata=lb.admin)
        truth = fill(fake, HUNT, 200, seed=5)  # the board drifted from the truth

        async def repaired() -> bool:
            return rows(await whole_board(lb, HUNT)) == expected(truth)

        await eventually(repaired, what="reconciliation")


async def test_at_maxmemory_submits_are_refused_and_nothing_is_lost(tmp_path, scores):
    fake, address = scores
    server = RedisServer(
        REPO / "services" / "leaderboard" / "redis.conf",
        free_port(),
        tmp_path,
        extra_args=("--maxmemory", "3mb"),
    ).start()
    admin = aioredis.Redis.from_url(server.url)
    try:
        async with leaderboard(server.url, address) as lb:
            await lb.stub.RebuildBoard(pb.RebuildBoardRequest(hunt_id=HUNT), metadata=lb.admin)
            t = now_ms()
            board: dict[str, tuple[int, int]] = {}
            kept: list = []  # what an outbox would keep and retry
            for batch_no in range(200):
                batch = [
                    update(HUNT, f"player-{batch_no:03d}-{i:03d}-{'x' * 40}", i, t + batch_no)
                    for i in range(500)
                ]
                for u in batch:
                    board[u.player_id] = (u.total_points, t + batch_no)
                try:
                    await lb.submitter.submit_scores(batch)
                except errors.ResourceExhausted as exc:
                    assert exc.retry_after_s and exc.retry_after_s > 0
                    kept.append(batch)
                    if len(kept) == 3:
                        break
            assert len(kept) == 3, "maxmemory was never reached"
            # reads still work at maxmemory (read-only scripts)
            assert (
                await lb.stub.GetTop(pb.GetTopRequest(hunt_id=HUNT), metadata=lb.client)
            ).player_count > 0
            await admin.config_set("maxmemory", "256mb")
            for batch in kept:
                result = await lb.submitter.submit_scores(batch)
                assert result.applied == len(batch)
            await asyncio.sleep(0.3)  # past the GetTop cache
            assert rows(await whole_board(lb, HUNT)) == expected(board)
    finally:
        await admin.aclose()
        server.stop()


async def test_everything_works_on_a_redis_cluster(scores):
    fake, address = scores
    cluster = RedisCluster(
        REPO / "services" / "leaderboard" / "redis.conf", RUN_DIR / f"lb-cluster-{free_port()}"
    ).start()
    try:
        source = {h: fill(fake, h, 400, seed=i) for i, h in enumerate(("c1", "c2", "c3", "c4"))}
        async with leaderboard(cluster.url, address, LEADERBOARD_REBUILD_PAGE_SIZE="150") as lb:
            for hunt in source:
                await lb.stub.RebuildBoard(pb.RebuildBoardRequest(hunt_id=hunt), metadata=lb.admin)
            t = now_ms()
            # one batch across hunts on different masters, pipelined
            await lb.submitter.submit_scores(
                [update(h, "pl-00007", 5000, t, version=999) for h in source]
            )
            for hunt, board in source.items():
                board["pl-00007"] = (5000, t)
                assert rows(await whole_board(lb, hunt, limit=37)) == expected(board)
                around = await lb.stub.GetAround(
                    pb.GetAroundRequest(hunt_id=hunt, player_id="pl-00007", n=2),
                    metadata=lb.client,
                )
                assert [e.rank for e in around.entries] == [1, 2, 3]
    finally:
        cluster.stop()


async def test_a_leaderboard_is_serving_only_with_the_boards_of_played_hunts_built(
    redis_urls, scores
):
    """The warm-up: a leaderboard starting on an empty Redis rebuilds, before
    it reports SERVING, the boards of the hunts geo lists as played now or
    within the hour, and no other; a board already there is left alone."""
    fake, address = scores
    now = datetime.now(UTC)
    played = fill(fake, "played", 700)
    fill(fake, "later", 40, seed=2)
    fill(fake, "draft", 40, seed=3)
    fill(fake, "over", 40, seed=4)
    catalog = FakeCatalog(
        listed=[
            hunt_message("played"),
            hunt_message("later", starts_at=now + timedelta(hours=3)),
            hunt_message("draft", status=geo_pb2.HUNT_STATUS_DRAFT),
            hunt_message("over", starts_at=now - timedelta(hours=3), ends_at=now),
            hunt_message("soon", starts_at=now + timedelta(minutes=30)),  # no scores yet
        ]
    )
    url = redis_urls["leaderboard"]
    await flush(url)
    redis = rediskit.connect(url)
    try:
        async with leaderboard(url, address, catalog=catalog, WARMUP_TIMEOUT_S="20") as lb:
            # SERVING: before any read or submit, the played boards are built.
            assert await redis.exists(keys.meta("played")) and await redis.exists(keys.meta("soon"))
            for other in ("later", "draft", "over"):
                assert not await redis.exists(keys.meta(other)), other
            assert rows(await whole_board(lb, "played")) == expected(played)
            built = await redis.hget(keys.meta("played"), "build")
        async with leaderboard(url, address, catalog=catalog, WARMUP_TIMEOUT_S="20"):
            assert await redis.hget(keys.meta("played"), "build") == built  # not rebuilt
    finally:
        await redis.aclose()
