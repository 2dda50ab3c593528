"""The leaderboard against a real Redis: order and tie-breaks, idempotent
submits, paging, GetRank/GetAround, the score encoding as stored, errors."""

from __future__ import annotations

import random

import grpc
import pytest

from libs import rediskit
from libs.timestamps import now_ms
from services.leaderboard import keys
from tests.support.leaderboard import (
    FakeScores,
    expected,
    leaderboard,
    rows,
    serve_scores,
    timestamp_ms,
    update,
    whole_board,
)
from tests.support.polling import eventually
from tests.support.rpcerrors import refused, retry_info
from tools.doubles import FakeCatalog
from treasure.leaderboard.v1 import leaderboard_pb2 as pb

HUNT = "h1"
DAY_MS = 86_400_000


@pytest.fixture
async def scores():
    fake = FakeScores()
    async with serve_scores(fake) as address:
        yield fake, address


@pytest.fixture
async def lb(redis_urls, scores):
    async with leaderboard(redis_urls["leaderboard"], scores[1]) as stubs:
        for hunt in (HUNT, "h2"):  # boards exist (empty), as after a cold start
            await stubs.stub.RebuildBoard(
                pb.RebuildBoardRequest(hunt_id=hunt), metadata=stubs.admin
            )
        yield stubs


async def test_order_and_tie_breaks_across_many_players(lb):
    rng = random.Random(5)
    base = now_ms() - DAY_MS
    board: dict[str, tuple[int, int]] = {}
    updates = []
    for i in range(400):
        player = f"p{rng.randrange(10**6):06d}-{i}"
        # few distinct totals and times: many equal totals, some at the same ms
        total = rng.choice((0, 10, 20, 20, 30, 1_000_000))
        reached = base + rng.choice((0, 1, 2, 1000, 7 * DAY_MS))
        board[player] = (total, reached)
        updates.append(update(HUNT, player, total, reached))
    # equal totals reached one millisecond apart, and equal in everything but the id
    for player, reached in (
        ("tie-late", base + 501),
        ("tie-early", base + 500),
        ("tie-b", base + 500),
    ):
        board[player] = (777, reached)
        updates.append(update(HUNT, player, 777, reached))
    rng.shuffle(updates)
    for start in range(0, len(updates), 97):
        result = await lb.submitter.submit_scores(updates[start : start + 97])
        assert result.stale == 0
    want = expected(board)
    assert rows(await whole_board(lb, HUNT)) == want
    ties = [r[1] for r in want if r[2] == 777]
    assert ties == ["tie-b", "tie-early", "tie-late"]
    for rank, player, total, reached in want:
        reply = await lb.stub.GetRank(
            pb.GetRankRequest(hunt_id=HUNT, player_id=player), metadata=lb.client
        )
        assert (reply.rank, reply.total_points, timestamp_ms(reply.reached_at)) == (
            rank,
            total,
            reached,
        )
        assert reply.player_count == len(want)


async def test_submits_are_idempotent_and_only_newer_versions_win(lb):
    t = now_ms() - 60_000
    first = await lb.submitter.submit_scores([update(HUNT, "p1", 20, t, version=2)])
    assert (first.applied, first.stale) == (1, 0)
    # an older batch replayed after the newer one changes nothing; so does a replay
    old = await lb.submitter.submit_scores([update(HUNT, "p1", 50, t + 5, version=1)])
    again = await lb.submitter.submit_scores([update(HUNT, "p1", 20, t, version=2)])
    assert (old.applied, old.stale) == (0, 1) and (again.applied, again.stale) == (0, 1)
    # within one batch the newest version wins, whatever the order
    mixed = await lb.submitter.submit_scores(
        [
            update(HUNT, "p2", 10, t, version=1),
            update(HUNT, "p2", 30, t + 2, version=3),
            update(HUNT, "p2", 20, t + 1, version=2),
            update(HUNT, "p1", 25, t + 9, version=3),
            update("h2", "p1", 99, t, version=1),  # another hunt, same pipeline
        ]
    )
    assert (mixed.applied, mixed.stale) == (3, 2)
    assert rows(await whole_board(lb, HUNT)) == [(1, "p2", 30, t + 2), (2, "p1", 25, t + 9)]
    assert rows(await whole_board(lb, "h2")) == [(1, "p1", 99, t)]
    # versions compare exactly beyond 2**53
    big = 2**62
    await lb.submitter.submit_scores([update(HUNT, "p3", 1, t, version=big + 1)])
    stale = await lb.submitter.submit_scores([update(HUNT, "p3", 2, t, version=big)])
    assert stale.stale == 1


async def test_paging_returns_every_player_exactly_once(lb):
    t = now_ms() - DAY_MS
    players = {f"p{i:04d}": (i % 7, t + (i % 3)) for i in range(1003)}
    updates = [update(HUNT, p, total, ms) for p, (total, ms) in players.items()]
    for start in range(0, len(updates), 500):
        await lb.submitter.submit_scores(updates[start : start + 500])
    static = [r[1] for r in expected(players)]
    assert [e.player_id for e in await whole_board(lb, HUNT, limit=7)] == static

    # totals only grow: players moving up while a client pages are not served
    # twice, and everyone who did not move is served exactly once
    seen: list[str] = []
    token = ""
    moved: set[str] = set()
    version = 2
    while True:
        reply = await lb.stub.GetTop(
            pb.GetTopRequest(hunt_id=HUNT, limit=50, page_token=token), metadata=lb.client
        )
        seen.extend(e.player_id for e in reply.entries)
        token = reply.next_page_token
        if not token:
            break
        # the page's last player (the cursor) and a player further down improve
        last = reply.entries[-1].player_id
        below = static[min(len(static) - 1, len(seen) + 30)]
        for player in (last, below):
            total, ms = players[player]
            await lb.submitter.submit_scores(
                [update(HUNT, player, total + 1, ms + 1, version=version)]
            )
            moved.add(player)
        version += 1
    assert len(seen) == len(set(seen))
    assert set(static) - moved <= set(seen)


async def test_get_around_at_the_top_the_bottom_and_the_middle(lb):
    t = now_ms() - 1000
    await lb.submitter.submit_scores([update(HUNT, f"p{i:02d}", 100 - i, t) for i in range(50)])

    async def around(player: str, n: int) -> list[tuple[int, str]]:
        reply = await lb.stub.GetAround(
            pb.GetAroundRequest(hunt_id=HUNT, player_id=player, n=n), metadata=lb.client
        )
        assert reply.player_count == 50
        return [(e.rank, e.player_id) for e in reply.entries]

    assert await around("p00", 3) == [(1, "p00"), (2, "p01"), (3, "p02"), (4, "p03")]
    assert await around("p49", 2) == [(48, "p47"), (49, "p48"), (50, "p49")]
    assert await around("p20", 1) == [(20, "p19"), (21, "p20"), (22, "p21")]
    assert len(await around("p20", 0)) == 11  # 0 means 5 on each side
    err = await refused(
        lb.stub.GetAround(pb.GetAroundRequest(hunt_id=HUNT, player_id="nobody"), metadata=lb.client)
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND
    err = await refused(
        lb.stub.GetRank(pb.GetRankRequest(hunt_id=HUNT, player_id="nobody"), metadata=lb.client)
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND


async def test_stored_scores_match_the_documented_encoding(lb, redis_urls):
    now = now_ms()
    cases = {
        "zero": (0, now - 30 * DAY_MS),
        "million-late": (1_000_000, now + 29 * DAY_MS),
        "million-early": (1_000_000, now - 30 * DAY_MS),
        "million-1ms": (1_000_000, now - 30 * DAY_MS + 1),
        "max": (keys.MAX_TOTAL, now),
        "over-max": (5_000_000, now + 1),  # sorts as MAX_TOTAL, answered exactly
    }
    await lb.submitter.submit_scores([update(HUNT, p, t, ms) for p, (t, ms) in cases.items()])
    client = rediskit.connect(redis_urls["leaderboard"])
    try:
        epoch = int(await client.hget(keys.meta(HUNT), "epoch"))
        for player, (total, reached) in cases.items():
            stored = await client.zscore(keys.board(HUNT), player)
            assert stored == float(keys.encode_score(total, reached, epoch))
            assert int(stored) == keys.encode_score(total, reached, epoch)
    finally:
        await client.aclose()
    assert rows(await whole_board(lb, HUNT)) == [
        (1, "max", keys.MAX_TOTAL, now),
        (2, "over-max", 5_000_000, now + 1),
        (3, "million-early", 1_000_000, now - 30 * DAY_MS),
        (4, "million-1ms", 1_000_000, now - 30 * DAY_MS + 1),
        (5, "million-late", 1_000_000, now + 29 * DAY_MS),
        (6, "zero", 0, now - 30 * DAY_MS),
    ]


async def test_get_top_is_cached_briefly_and_counted(lb):
    await lb.submitter.submit_scores([update(HUNT, "p1", 5, now_ms())])
    request = pb.GetTopRequest(hunt_id=HUNT, limit=10)
    first = await lb.stub.GetTop(request, metadata=lb.client)
    second = await lb.stub.GetTop(request, metadata=lb.client)
    assert first == second and first.player_count == 1
    labels = {"cache": "top", "tier": "l1"}
    assert lb.metric("cache_requests_total", {**labels, "result": "miss"}) >= 1
    assert lb.metric("cache_requests_total", {**labels, "result": "hit"}) >= 1


async def test_bad_requests_and_roles(lb):
    t = now_ms()

    async def code(call) -> grpc.StatusCode:
        return (await refused(call)).code()

    invalid = grpc.StatusCode.INVALID_ARGUMENT
    stub = lb.stub
    assert (
        await code(stub.GetTop(pb.GetTopRequest(hunt_id="bad id"), metadata=lb.client)) == invalid
    )
    assert await code(stub.GetTop(pb.GetTopRequest(hunt_id="{h}"), metadata=lb.client)) == invalid
    assert (
        await code(stub.GetTop(pb.GetTopRequest(hunt_id=HUNT, limit=1001), metadata=lb.client))
        == invalid
    )
    assert (
        await code(
            stub.GetTop(pb.GetTopRequest(hunt_id=HUNT, page_token="nope"), metadata=lb.client)
        )
        == invalid
    )
    assert (
        await code(
            stub.GetAround(
                pb.GetAroundRequest(hunt_id=HUNT, player_id="p", n=101), metadata=lb.client
            )
        )
        == invalid
    )
    assert await code(stub.SubmitScores(pb.SubmitScoresRequest(), metadata=lb.service)) == invalid
    good = pb.ScoreUpdate(hunt_id=HUNT, player_id="p", total_points=1, version=1)
    good.reached_at.FromMilliseconds(t)
    for broken in (
        pb.ScoreUpdate(hunt_id=HUNT, player_id="p", total_points=1, version=1),  # no time
        pb.ScoreUpdate(
            hunt_id=HUNT,
            player_id="p",
            total_points=10**9 + 1,
            version=1,
            reached_at=good.reached_at,
        ),
        pb.ScoreUpdate(
            hunt_id=HUNT, player_id="p", total_points=1, version=0, reached_at=good.reached_at
        ),
        pb.ScoreUpdate(
            hunt_id=HUNT, player_id="p|x", total_points=1, version=1, reached_at=good.reached_at
        ),
    ):
        request = pb.SubmitScoresRequest(updates=[good, broken])
        err = await refused(stub.SubmitScores(request, metadata=lb.service))
        assert err.code() == invalid and "updates[1]" in err.details()
    denied = grpc.StatusCode.PERMISSION_DENIED
    request = pb.SubmitScoresRequest(updates=[good])
    assert await code(stub.SubmitScores(request, metadata=lb.client)) == denied
    assert await code(stub.SubmitScores(request, metadata=lb.admin)) == denied
    assert (
        await code(stub.RebuildBoard(pb.RebuildBoardRequest(hunt_id=HUNT), metadata=lb.client))
        == denied
    )
    assert (await stub.SubmitScores(request, metadata=lb.service)).applied == 1


async def test_a_missing_board_is_built_within_the_read(lb, scores):
    fake, _ = scores
    fake.put("cold", "p1", 3, now_ms(), 1)
    before = fake.streams  # the fixture built two boards
    reply = await lb.stub.GetRank(
        pb.GetRankRequest(hunt_id="cold", player_id="p1"), metadata=lb.client, timeout=5
    )
    assert (reply.rank, reply.total_points, reply.player_count) == (1, 3, 1)
    # A hunt nobody scored in gets an empty board on the first read.
    top = await lb.stub.GetTop(pb.GetTopRequest(hunt_id="quiet"), metadata=lb.client, timeout=5)
    assert (list(top.entries), top.player_count) == ([], 0)
    assert fake.streams == before + 2


async def test_a_board_that_cannot_be_built_in_time_is_unavailable_with_a_retry_hint(lb, scores):
    fake, _ = scores
    fake.put("slow", "p1", 3, now_ms(), 1)
    before = fake.streams
    fake.page_delay_s = 2.5  # longer than the read may wait
    err = await refused(
        lb.stub.GetRank(
            pb.GetRankRequest(hunt_id="slow", player_id="p1"), metadata=lb.client, timeout=1.5
        )
    )
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    info = retry_info(err)
    assert info is not None and info.retry_delay.ToMilliseconds() > 0

    async def rank() -> pb.GetRankResponse | None:
        try:
            return await lb.stub.GetRank(
                pb.GetRankRequest(hunt_id="slow", player_id="p1"), metadata=lb.client, timeout=0.5
            )
        except grpc.aio.AioRpcError as exc:
            assert exc.code() in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.DEADLINE_EXCEEDED,
            ), exc
            return None

    # The rebuild went on after the read gave up; the board comes back complete.
    reply = await eventually(rank, until=lambda r: r is not None, what="the rebuilt board")
    assert (reply.rank, reply.total_points, reply.player_count) == (1, 3, 1)
    assert fake.streams == before + 1  # one rebuild, shared by every read that waited

    fake.down = True  # a board that cannot be built at all
    err = await refused(
        lb.stub.GetTop(pb.GetTopRequest(hunt_id="broken"), metadata=lb.client, timeout=5)
    )
    assert err.code() == grpc.StatusCode.UNAVAILABLE and retry_info(err) is not None


async def test_reads_of_a_hunt_not_in_the_catalog_are_not_found(redis_urls, scores):
    fake, address = scores
    catalog = FakeCatalog(hunts={"real"})
    async with leaderboard(redis_urls["leaderboard"], address, catalog=catalog) as board:
        for _ in range(3):
            for call in (
                board.stub.GetTop(pb.GetTopRequest(hunt_id="ghost"), metadata=board.client),
                board.stub.GetRank(
                    pb.GetRankRequest(hunt_id="ghost", player_id="p1"), metadata=board.client
                ),
                board.stub.GetAround(
                    pb.GetAroundRequest(hunt_id="ghost", player_id="p1"), metadata=board.client
                ),
            ):
                err = await refused(call)
                assert err.code() == grpc.StatusCode.NOT_FOUND
                assert "ghost" in err.details()
        assert catalog.asked == 1  # the answer is cached
        assert fake.streams == 0  # nothing was rebuilt for it
        top = await board.stub.GetTop(pb.GetTopRequest(hunt_id="real"), metadata=board.client)
        assert top.player_count == 0
    client = rediskit.connect(redis_urls["leaderboard"])
    try:
        assert [k async for k in client.scan_iter(match="*ghost*")] == []
    finally:
        await client.aclose()


async def test_while_geo_cannot_say_no_board_is_made_but_boards_are_served(redis_urls, scores):
    fake, address = scores
    fake.put("known", "p1", 5, now_ms(), 1)
    async with leaderboard(
        redis_urls["leaderboard"],
        address,
        GEO_SERVICE_ADDR="127.0.0.1:1",  # nothing listens
    ) as board:
        for call in (
            board.stub.GetTop(pb.GetTopRequest(hunt_id="maybe"), metadata=board.client),
            board.stub.RebuildBoard(pb.RebuildBoardRequest(hunt_id="maybe"), metadata=board.admin),
        ):
            err = await refused(call)
            assert err.code() == grpc.StatusCode.UNAVAILABLE
            assert retry_info(err) is not None and "catalog" in err.details()
        assert fake.streams == 0  # nothing was built for it
        # A board made by the score service's submits is served as always.
        await board.submitter.submit_scores([update("known", "p2", 9, now_ms())])
        top = await board.stub.GetTop(pb.GetTopRequest(hunt_id="known"), metadata=board.client)
        assert [e.player_id for e in top.entries] == ["p2", "p1"]
    client = rediskit.connect(redis_urls["leaderboard"])
    try:
        assert [k async for k in client.scan_iter(match="*maybe*")] == []
    finally:
        await client.aclose()
