"""The score service end to end over gRPC, on real Postgres and Redis: Unlock
(idempotent, exact under races), reads through the hot tier (flushed, full,
down), StreamScores over a big hunt, and the outbox relay against a real gRPC
leaderboard double (outages, push-back, several relays, trace links)."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import pytest
import redis.asyncio as aioredis
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from libs import errors, pg, rediskit
from libs.telemetry import Telemetry
from services.score import keys
from services.score.model import UnlockKind
from services.score.store import ScoreStore
from tests.support.env import CLIENT_TOKEN, SERVICE_TOKEN, bearer
from tests.support.infra import REPO, flush
from tests.support.polling import eventually
from tests.support.worklog import work_done
from tools.doubles import FakeCatalog, LeaderboardDouble
from tools.inprocess import channel_to, score_client, score_service
from tools.localinfra import RedisServer, free_port
from treasure.score.v1 import score_pb2, score_pb2_grpc

AT = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
FAST_RELAY = {
    "SCORE_RELAY_BACKOFF_MIN_S": "0.02",
    "SCORE_RELAY_BACKOFF_MAX_S": "0.2",
    "SCORE_RELAY_STATS_INTERVAL_S": "0.05",
}


@pytest.fixture
async def leaderboard():
    double = await LeaderboardDouble().start()
    yield double
    await double.stop()


@pytest.fixture
async def score(pg_dsn, redis_urls, leaderboard):
    async with score_service(
        pg_dsn, redis_urls["score"], leaderboard.address, **FAST_RELAY
    ) as runtime:
        yield runtime


@pytest.fixture
async def client(score):
    async with score_client(score.port) as c:
        yield c


@pytest.fixture
async def db(pg_dsn):
    connection = await asyncpg.connect(pg_dsn)
    yield connection
    await connection.close()


async def unlock(client, scan, player="p1", cp="cp1", *, hunt="h1", points=10, bonus=5, at=AT):
    return await client.unlock(
        scan_id=scan,
        hunt_id=hunt,
        player_id=player,
        checkpoint_id=cp,
        points=points,
        first_finder_bonus=bonus,
        at=at,
    )


async def test_unlock_replay_and_already_unlocked(score, client, leaderboard, db):
    written = await _outbox_rows_written(db)  # the warm-up's primed unlocks took ids too
    first = await unlock(client, "s1")
    assert (first.unlocked, first.points_awarded, first.first_finder) == (True, 15, True)
    assert (first.total_points, first.checkpoints_found, first.unlock_scan_id) == (15, 1, "s1")
    second = await unlock(client, "s2", cp="cp2", at=AT + timedelta(seconds=5))
    assert (second.points_awarded, second.total_points, second.checkpoints_found) == (15, 30, 2)
    # The same scan again: the first answer, although the total moved on since.
    assert await unlock(client, "s1") == first
    # Another scan of an unlocked checkpoint: nothing changes.
    again = await unlock(client, "s3", cp="cp2")
    assert (again.unlocked, again.points_awarded, again.first_finder) == (False, 0, False)
    assert (again.total_points, again.checkpoints_found, again.unlock_scan_id) == (30, 2, "s2")
    # A scan id reused for another checkpoint is refused.
    with pytest.raises(errors.FailedPrecondition, match="scan_id"):
        await unlock(client, "s1", cp="cp9")
    assert await db.fetchval("SELECT count(*) FROM score.unlocks") == 2
    # One outbox row per unlock that moved the total; none for the replay, the
    # scan of an unlocked checkpoint or the refused reuse. The relay deletes
    # rows once the board has them, so this counts every row ever written.
    assert await _outbox_rows_written(db) - written == 2
    await _board_matches(leaderboard, db)
    assert await _outbox_drained(db) == 0
    assert score.metrics.registry.get_sample_value("score_outbox_delivered_total") == 2
    totals = await client.get_score("h1", "p1")
    assert (totals.total_points, totals.checkpoints_found) == (30, 2)
    assert totals.reached_at == AT + timedelta(seconds=5)
    progress = await client.get_progress("h1", "p1")
    assert [
        (c.checkpoint_id, c.points_awarded, c.first_finder, c.scan_id) for c in progress.checkpoints
    ] == [
        ("cp1", 15, True, "s1"),
        ("cp2", 15, True, "s2"),
    ]
    assert progress.checkpoints[0].unlocked_at == AT


async def test_a_hunt_not_in_the_catalog_is_not_found(pg_dsn, redis_urls, leaderboard):
    catalog = FakeCatalog(hunts={"h1"})
    async with (
        score_service(pg_dsn, redis_urls["score"], leaderboard.address, catalog=catalog) as score,
        channel_to(score.port, CLIENT_TOKEN) as channel,
    ):
        stub = score_pb2_grpc.ScoreServiceStub(channel)
        for _ in range(2):
            for call in (
                stub.GetScore(score_pb2.GetScoreRequest(hunt_id="h9", player_id="p1")),
                stub.GetProgress(score_pb2.GetProgressRequest(hunt_id="h9", player_id="p1")),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await call
                assert caught.value.code() == grpc.StatusCode.NOT_FOUND
                assert "h9" in caught.value.details()
        assert catalog.asked == 1  # cached
        zero = await stub.GetScore(score_pb2.GetScoreRequest(hunt_id="h1", player_id="p1"))
        assert (zero.total_points, zero.checkpoints_found) == (0, 0)
        # A player with unlocks proves the hunt exists: geo is not asked.
        async with score_client(score.port) as clients:
            await unlock(clients, "s1", hunt="h7")
        asked = catalog.asked
        found = await stub.GetScore(score_pb2.GetScoreRequest(hunt_id="h7", player_id="p1"))
        assert found.checkpoints_found == 1 and catalog.asked == asked


async def test_a_player_without_unlocks_has_zero(client):
    score = await client.get_score("h1", "nobody")
    assert (score.total_points, score.checkpoints_found, score.reached_at) == (0, 0, None)
    progress = await client.get_progress("h1", "nobody")
    assert (progress.score.total_points, progress.checkpoints) == (0, ())
    # Cached as version 0; the first unlock still shows at once.
    await unlock(client, "s1", player="nobody")
    assert (await client.get_score("h1", "nobody")).total_points == 15
    assert len((await client.get_progress("h1", "nobody")).checkpoints) == 1


async def test_50_concurrent_unlocks_of_one_checkpoint_count_once(client, db):
    answers = await asyncio.gather(
        *(unlock(client, f"race-{i}", points=7, bonus=3) for i in range(50))
    )
    winners = [a for a in answers if a.unlocked]
    assert len(winners) == 1
    winner = winners[0]
    assert winner.points_awarded == 10 and winner.first_finder
    assert all(a.unlock_scan_id == winner.unlock_scan_id for a in answers)
    assert all(a.points_awarded == 0 for a in answers if not a.unlocked)
    assert await db.fetchval("SELECT count(*) FROM score.unlocks") == 1
    row = await db.fetchrow("SELECT total, found, version FROM score.player_scores")
    assert tuple(row) == (10, 1, 1)
    # Copies of one scan arriving at once all get the first answer.
    copies = await asyncio.gather(*(unlock(client, "twin", cp="cp2") for _ in range(10)))
    assert len(set(copies)) == 1 and copies[0].unlocked and copies[0].total_points == 25
    assert (await client.get_score("h1", "p1")).total_points == 25


async def test_20_players_race_for_one_first_find(client, db):
    answers = await asyncio.gather(
        *(unlock(client, f"s-{i}", player=f"p{i}", points=100, bonus=50) for i in range(20))
    )
    assert all(a.unlocked for a in answers)
    assert sum(a.first_finder for a in answers) == 1
    assert sorted(a.points_awarded for a in answers) == [100] * 19 + [150]
    assert await db.fetchval("SELECT count(*) FROM score.first_finds") == 1
    assert await db.fetchval("SELECT sum(total) FROM score.player_scores") == 20 * 100 + 50
    finder = await db.fetchval("SELECT player_id FROM score.first_finds")
    assert next(a for a in answers if a.first_finder).unlock_scan_id == f"s-{finder[1:]}"


async def test_1000_racing_hot_tier_writes_leave_the_newest(pg_dsn, redis_urls, leaderboard, db):
    # A generous deadline: what is under test is the version check, not the timeout.
    async with (
        score_service(
            pg_dsn, redis_urls["score"], leaderboard.address, SCORE_HOT_TIER_TIMEOUT_MS="5000"
        ) as runtime,
        score_client(runtime.port) as client,
    ):
        cps = list(range(1000))
        random.shuffle(cps)
        sem = asyncio.Semaphore(200)

        async def one(i: int):
            async with sem:
                return await unlock(
                    client,
                    f"s{i}",
                    cp=f"cp{i}",
                    points=i % 7,
                    bonus=0,
                    at=AT + timedelta(seconds=i),
                )

        answers = await asyncio.gather(*(one(i) for i in cps))
        assert all(a.unlocked for a in answers)
        row = await db.fetchrow("SELECT total, found, version FROM score.player_scores")
        assert tuple(row) == (sum(i % 7 for i in range(1000)), 1000, 1000)
        redis = rediskit.connect(redis_urls["score"])
        try:
            cached = await redis.hgetall(keys.player_score("h1", "p1"))
        finally:
            await redis.aclose()
        assert (int(cached["t"]), int(cached["f"]), int(cached["v"])) == tuple(row)
        progress = await client.get_progress("h1", "p1")
        assert len(progress.checkpoints) == 1000
        assert [c.checkpoint_id for c in progress.checkpoints] == [f"cp{i}" for i in range(1000)]


async def test_reads_survive_a_flushed_or_partly_evicted_redis(client, redis_urls):
    for i in range(3):
        await unlock(client, f"s{i}", cp=f"cp{i}", at=AT + timedelta(minutes=i))
    redis = rediskit.connect(redis_urls["score"])
    try:
        await flush(redis_urls["score"])
        assert (await client.get_score("h1", "p1")).total_points == 45
        assert await redis.hget(keys.player_score("h1", "p1"), "t") == "45"  # refilled
        await redis.delete(keys.player_checkpoints("h1", "p1"))  # one key evicted
        progress = await client.get_progress("h1", "p1")
        assert [c.checkpoint_id for c in progress.checkpoints] == ["cp0", "cp1", "cp2"]
        assert await redis.hget(keys.player_checkpoints("h1", "p1"), "_v") == "3"
        await redis.delete(keys.player_score("h1", "p1"))
        await unlock(client, "s3", cp="cp3")  # the set was complete: it gains cp3
        progress = await client.get_progress("h1", "p1")
        assert progress.score.total_points == 60 and len(progress.checkpoints) == 4
        # A cached value older than Postgres is never written over a newer one.
        await redis.hset(keys.player_score("h1", "p1"), mapping={"t": 1, "v": 1})
        assert await redis.hget(keys.player_score("h1", "p1"), "v") == "1"
    finally:
        await redis.aclose()


async def test_a_full_redis_evicts_and_answers_stay_right(pg_dsn, leaderboard, tmp_path, db):
    server = RedisServer(
        REPO / "services" / "score" / "redis.conf",
        free_port(),
        tmp_path,
        extra_args=("--maxmemory", "3mb"),
    ).start()
    redis = aioredis.Redis.from_url(server.url, decode_responses=True)
    try:
        pipe = redis.pipeline(transaction=False)
        for i in range(3000):
            pipe.set(f"junk:{i}", "x" * 1000)
        await pipe.execute()
        async with (
            score_service(
                pg_dsn, server.url, leaderboard.address, SCORE_HOT_TIER_TIMEOUT_MS="1000"
            ) as runtime,
            score_client(runtime.port) as client,
        ):
            for p in range(200):
                for c in range(3):
                    await unlock(client, f"s{p}-{c}", player=f"p{p}", cp=f"cp{c}", points=p + c)
            for p in range(200):
                score = await client.get_score("h1", f"p{p}")
                assert (score.total_points, score.checkpoints_found) == (
                    3 * p + 3 + (15 if p == 0 else 0),
                    3,
                )
        assert int((await redis.info("stats"))["evicted_keys"]) > 0
    finally:
        await redis.aclose()
        server.stop()


async def test_score_redis_stopped_unlock_and_reads_still_answer(pg_dsn, leaderboard, tmp_path):
    server = RedisServer(REPO / "services" / "score" / "redis.conf", free_port(), tmp_path).start()
    try:
        async with score_service(pg_dsn, server.url, leaderboard.address) as runtime:
            async with score_client(runtime.port) as client:
                await unlock(client, "s1")
                assert (await client.get_score("h1", "p1")).total_points == 15
                server.stop()
                for i in range(2, 12):  # enough to open the breaker, and past it
                    answer = await unlock(client, f"s{i}", cp=f"cp{i}", points=1, bonus=0)
                    assert answer.unlocked and answer.total_points == 15 + i - 1
                    score = await client.get_score("h1", "p1")
                    assert (score.total_points, score.checkpoints_found) == (15 + i - 1, i)
                progress = await client.get_progress("h1", "p1")
                assert len(progress.checkpoints) == 11
            errors_seen = runtime.metrics.registry.get_sample_value(
                "score_hot_tier_errors_total", {"op": "write"}
            )
            assert errors_seen and errors_seen > 0
    finally:
        server.stop()


async def test_stream_scores_over_100000_players(client, db):
    await db.execute(
        """INSERT INTO score.player_scores (hunt_id, player_id, total, found, reached_at, version)
           SELECT 'big', 'p' || lpad(g::text, 6, '0'), g % 1000, 1,
                  '2026-01-01'::timestamptz + g * interval '1 second', 1 + g % 3
             FROM generate_series(1, 100000) g"""
    )
    await db.execute("""INSERT INTO score.player_scores VALUES ('other', 'x', 1, 1, now(), 1)""")
    pages = [page async for page in client.stream_scores("big", page_size=4096)]
    assert [len(p) for p in pages] == [4096] * 24 + [100000 - 24 * 4096]
    ids = [t.player_id for page in pages for t in page]
    assert len(ids) == 100000 and ids == sorted(ids) and len(set(ids)) == 100000
    assert ids[0] == "p000001" and ids[-1] == "p100000"
    sample = pages[3][7]  # player 3 * 4096 + 8
    g = 3 * 4096 + 8
    assert (sample.player_id, sample.total_points, sample.version) == (
        f"p{g:06d}",
        g % 1000,
        1 + g % 3,
    )
    assert sample.reached_at == datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=g)
    defaults = [len(p) async for p in _pages(client, "other")]
    assert defaults == [1]


async def _pages(client, hunt):
    async for page in client.stream_scores(hunt, page_size=0):
        yield page


async def _outbox_rows(db) -> int:
    return await db.fetchval("SELECT count(*) FROM score.outbox")


async def _outbox_rows_written(db) -> int:
    """Rows ever inserted into score.outbox, delivered (deleted) or not, and
    rolled back (libs.pg.prime): the last id its identity handed out (0
    before the first)."""
    return await db.fetchval(
        "SELECT coalesce(pg_sequence_last_value("
        "pg_get_serial_sequence('score.outbox', 'id')::regclass), 0)"
    )


async def _outbox_drained(db) -> int:
    """The outbox row count once it reached 0 (fails after 30 s): the board
    can hold a batch a moment before the relay commits its delete."""
    return await eventually(
        lambda: _outbox_rows(db),
        until=lambda rows: rows == 0,
        timeout_s=30,
        interval_s=0.01,
        what="score's outbox to drain",
    )


async def _board_matches(leaderboard, db) -> None:
    truth = {
        (r["hunt_id"], r["player_id"]): (r["total"], r["version"], r["reached_at"])
        for r in await db.fetch("SELECT * FROM score.player_scores")
    }
    await leaderboard.servicer.wait_until(
        lambda: (
            {
                k: (u.total_points, u.version, u.reached_at.ToDatetime(tzinfo=UTC))
                for k, u in leaderboard.servicer.board.items()
            }
            == truth
        ),
        what=f"the board to hold score's {len(truth)} totals",
    )


async def test_relay_delivers_and_catches_up_after_an_outage(score, client, leaderboard, db):
    for p in range(10):
        await unlock(client, f"a{p}", player=f"p{p}")
    await _board_matches(leaderboard, db)
    assert leaderboard.servicer.tokens == {f"Bearer {SERVICE_TOKEN}"}
    await leaderboard.stop()
    for p in range(10):
        await unlock(client, f"b{p}", player=f"p{p}", cp="cp2", points=p)
    # The leaderboard is unreachable for several seconds; the rows wait.
    await asyncio.sleep(3)
    assert await _outbox_rows(db) == 10
    depth = score.metrics.registry.get_sample_value("score_outbox_depth")
    assert depth == 10
    assert score.metrics.registry.get_sample_value("score_outbox_oldest_age_seconds") > 1
    await leaderboard.start()
    await _board_matches(leaderboard, db)
    assert await _outbox_drained(db) == 0


@pytest.mark.parametrize("code", [grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE])
async def test_relay_backs_off_while_the_board_pushes_back(score, client, leaderboard, db, code):
    leaderboard.servicer.fail_with = code
    await unlock(client, "s1")
    await unlock(client, "s2", cp="cp2")
    # >= 6 refusals: the relay saw at least one failure and tried again (the
    # channel itself retries UNAVAILABLE a few times per attempt).
    await leaderboard.servicer.wait_until(
        lambda: leaderboard.servicer.refused >= 6, what="six refused SubmitScores"
    )
    assert await _outbox_rows(db) == 2 and leaderboard.servicer.batches == []
    failures = score.metrics.registry.get_sample_value(
        "score_outbox_send_failures_total",
        {
            "reason": "PEER_EXHAUSTED"
            if code == grpc.StatusCode.RESOURCE_EXHAUSTED
            else "PEER_UNAVAILABLE"
        },
    )
    assert failures >= 1
    leaderboard.servicer.fail_with = None
    await _board_matches(leaderboard, db)
    assert await _outbox_drained(db) == 0
    # Two rows of one player were collapsed to the newest version.
    sent = [(u.player_id, u.version) for batch in leaderboard.servicer.batches for u in batch]
    assert ("p1", 2) in sent and ("p1", 1) not in sent


async def test_two_relays_share_the_outbox(pg_dsn, redis_urls, leaderboard, db):
    async with (
        score_service(pg_dsn, redis_urls["score"], leaderboard.address, **FAST_RELAY) as one,
        score_service(pg_dsn, redis_urls["score"], leaderboard.address, **FAST_RELAY) as two,
        score_client(one.port) as c1,
        score_client(two.port) as c2,
    ):
        await asyncio.gather(
            *(
                unlock(c, f"s{p}-{k}", player=f"p{p}", cp=f"cp{k}", points=k)
                for p in range(40)
                for k in range(5)
                for c in [(c1, c2)[(p + k) % 2]]
            )
        )
        await _board_matches(leaderboard, db)
        assert await _outbox_drained(db) == 0
    sent = [(u.player_id, u.version) for batch in leaderboard.servicer.batches for u in batch]
    assert len(sent) == len(set(sent))  # no row went out twice
    # Counted in Postgres with each acknowledged delivery: every outbox row once.
    # Each new unlock wrote one row (not the outbox's id sequence: an Unlock
    # batch that lost a deadlock and ran again left gaps in it).
    written = await db.fetchval("SELECT count(*) FROM score.unlocks")
    assert written == 200
    assert (await work_done(db, "score", "outbox-delivery"))[1] == written
    for batch in leaderboard.servicer.batches:
        players = [u.player_id for u in batch]
        assert len(players) == len(set(players))  # collapsed within a batch


async def test_the_delivery_is_linked_to_the_unlock_trace(pg_dsn, redis_urls, leaderboard, db):
    exporter = InMemorySpanExporter()
    telemetry = Telemetry("treasure-score", exporter=exporter)
    async with (
        score_service(
            pg_dsn, redis_urls["score"], leaderboard.address, telemetry=telemetry
        ) as runtime,
        score_client(runtime.port) as client,
    ):
        await unlock(client, "s1", player="p7", cp="cp3")
        await _board_matches(leaderboard, db)
        assert await _outbox_drained(db) == 0  # committed after the span ended
        await asyncio.to_thread(telemetry.provider.force_flush)
        spans = exporter.get_finished_spans()
    unlock_span = next(s for s in spans if s.name.endswith("ScoreService/Unlock"))
    assert {k: unlock_span.attributes[k] for k in ("hunt.id", "player.id", "checkpoint.id")} == {
        "hunt.id": "h1",
        "player.id": "p7",
        "checkpoint.id": "cp3",
    }
    assert unlock_span.attributes["unlock.outcome"] == "unlocked"
    deliver = next(s for s in spans if s.name == "score.outbox.deliver")
    assert deliver.context.trace_id != unlock_span.context.trace_id
    assert [link.context.span_id for link in deliver.links] == [unlock_span.context.span_id]
    assert deliver.links[0].context.trace_id == unlock_span.context.trace_id


def _violation(err: grpc.aio.AioRpcError) -> str:
    status = status_pb2.Status.FromString(dict(err.trailing_metadata())["grpc-status-details-bin"])
    bad = error_details_pb2.BadRequest()
    assert any(d.Unpack(bad) for d in status.details)
    return bad.field_violations[0].field


def _unlock_request(**changes) -> score_pb2.UnlockRequest:
    request = score_pb2.UnlockRequest(
        scan_id="s1", hunt_id="h1", player_id="p1", checkpoint_id="cp1", points=10
    )
    request.at.FromDatetime(AT)
    for name, value in changes.items():
        if value is None:
            request.ClearField(name)
        else:
            setattr(request, name, value)
    return request


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"points": -1}, "points"),
        ({"points": 1_000_001}, "points"),
        ({"first_finder_bonus": -5}, "first_finder_bonus"),
        ({"scan_id": ""}, "scan_id"),
        ({"hunt_id": "h 1"}, "hunt_id"),
        ({"player_id": "-p"}, "player_id"),
        ({"checkpoint_id": "c" * 65}, "checkpoint_id"),
        ({"player_id": "p{1}"}, "player_id"),
        ({"at": None}, "at"),
    ],
)
async def test_invalid_unlocks_are_invalid_argument(score, changes, field, db):
    async with channel_to(score.port) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await score_pb2_grpc.ScoreServiceStub(channel).Unlock(_unlock_request(**changes))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _violation(err.value) == field
    assert await db.fetchval("SELECT count(*) FROM score.unlocks") == 0


async def test_invalid_reads_and_roles(score):
    async with channel_to(score.port, CLIENT_TOKEN) as channel:
        stub = score_pb2_grpc.ScoreServiceStub(channel)
        for call, field in [
            (stub.GetScore(score_pb2.GetScoreRequest(hunt_id="h1")), "player_id"),
            (stub.GetProgress(score_pb2.GetProgressRequest(player_id="p1")), "hunt_id"),
        ]:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert _violation(err.value) == field
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Unlock(_unlock_request())
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        reply = await stub.GetScore(score_pb2.GetScoreRequest(hunt_id="h1", player_id="p1"))
        assert reply.total_points == 0
    async with channel_to(score.port) as channel:
        stub = score_pb2_grpc.ScoreServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in stub.StreamScores(
                score_pb2.StreamScoresRequest(hunt_id="h1", page_size=5001)
            ):
                pass
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert _violation(err.value) == "page_size"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async with channel_to(score.port, CLIENT_TOKEN) as channel:
            async for _ in score_pb2_grpc.ScoreServiceStub(channel).StreamScores(
                score_pb2.StreamScoresRequest(hunt_id="h1"), metadata=bearer(CLIENT_TOKEN)
            ):
                pass
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_batch_of_unlocks_with_a_reused_scan_id_fails_that_one_alone(pg_dsn, db):
    """Unlocks sent together (one statement): when one of them reuses a
    scan_id the statement keeps nothing, each runs again alone, and only that
    one is refused; the first finder of a batch is the first in it."""
    pool = await pg.create_pool(pg_dsn)
    store = ScoreStore(pool, batch_size=32)

    def unlock_of(scan_id: str, player: str, cp: str):
        return store.unlock(scan_id=scan_id, hunt_id="h1", player_id=player, checkpoint_id=cp,
                            points=10, first_finder_bonus=5, at=AT, traceparent="", tracestate="")  # fmt: skip

    try:
        assert (await unlock_of("dup", "p1", "cp3")).kind is UnlockKind.UNLOCKED
        results = await asyncio.gather(
            unlock_of("s-a", "p1", "cp1"),
            unlock_of("dup", "p1", "cp2"),  # used for cp3 already
            unlock_of("s-b", "p2", "cp1"),
            unlock_of("s-c", "p1", "cp1"),  # p1 has cp1 from s-a
            return_exceptions=True,
        )
        assert isinstance(results[1], errors.FailedPrecondition)
        a, b, c = results[0], results[2], results[3]
        assert a.kind is UnlockKind.UNLOCKED and a.first_finder and a.points_awarded == 15
        assert b.kind is UnlockKind.UNLOCKED and not b.first_finder and b.points_awarded == 10
        assert c.kind is UnlockKind.ALREADY_UNLOCKED and c.unlock_scan_id == "s-a"
        assert await db.fetchval("SELECT count(*) FROM score.unlocks") == 3
        assert await db.fetchval("SELECT count(*) FROM score.outbox") == 3
        assert store.batching() == (2, 5)  # "dup" first, then the four together

        # A batch that goes through keeps the order it was sent in.
        more = await asyncio.gather(*(unlock_of(f"m-{i}", f"r{i}", "cp9") for i in range(6)))
        assert [m.first_finder for m in more] == [True] + [False] * 5
    finally:
        await pool.close()


async def test_a_new_process_does_not_trust_what_an_earlier_one_left(
    pg_dsn, redis_urls, leaderboard
):
    """A score process that died between a commit and its write-through left
    an older total in Redis (and its dirty marks died with it). The next
    process reads each player from Postgres once, refills, and only then
    serves that key from Redis."""
    key = keys.player_score("h1", "p1")
    redis = rediskit.connect(redis_urls["score"])
    try:
        async with score_service(pg_dsn, redis_urls["score"], leaderboard.address) as first:
            async with score_client(first.port) as c:
                await unlock(c, "s1", cp="cp1")
                await unlock(c, "s2", cp="cp2", at=AT + timedelta(minutes=1))
        # As if the second write-through never happened: version 1's total.
        await redis.hset(key, mapping={"t": "15", "f": "1", "v": "1"})
        async with score_service(pg_dsn, redis_urls["score"], leaderboard.address) as second:
            async with score_client(second.port) as c:
                assert (await c.get_score("h1", "p1")).total_points == 30  # Postgres, not Redis
                assert await redis.hget(key, "v") == "2"  # refilled
                await redis.hset(key, "t", "999")  # now trusted: served from Redis
                assert (await c.get_score("h1", "p1")).total_points == 999
    finally:
        await redis.delete(key)
        await redis.aclose()


async def test_an_unlock_that_loses_a_deadlock_runs_again(pg_dsn, db):
    """An unlock chosen as a deadlock's victim (here against a transaction
    that takes the same rows in the other order, as another replica's batch
    can) was rolled back whole: it runs again and applies once."""
    pool = await pg.create_pool(pg_dsn)
    store = ScoreStore(pool)
    other = await asyncpg.connect(pg_dsn)
    try:
        transaction = other.transaction()
        await transaction.start()
        await other.execute(
            "INSERT INTO score.first_finds VALUES ('h1', 'cp1', 'px', 'sx', $1)", AT
        )
        unlocking = asyncio.ensure_future(
            store.unlock(scan_id="s1", hunt_id="h1", player_id="p1", checkpoint_id="cp1",
                         points=10, first_finder_bonus=5, at=AT, traceparent="", tracestate="")
        )  # fmt: skip
        await asyncio.sleep(0.3)  # it holds its unlock row and waits for the first find
        # The other order: this waits for the unlock's row; Postgres detects the
        # cycle after deadlock_timeout in the backend that waited first, the unlock's.
        await other.execute(
            "INSERT INTO score.unlocks VALUES ('h1', 'p1', 'cp1', 'sy', $1, 1, false, 1, 1, $1, 1)"
            " ON CONFLICT DO NOTHING",
            AT,
        )
        await transaction.rollback()
        outcome = await asyncio.wait_for(unlocking, 10)
        assert outcome.kind is UnlockKind.UNLOCKED and outcome.first_finder
        assert await db.fetchval("SELECT count(*) FROM score.unlocks WHERE scan_id = 's1'") == 1
        assert (
            await db.fetchval("SELECT total FROM score.player_scores WHERE player_id = 'p1'") == 15
        )
    finally:
        await other.close()
        await pool.close()
