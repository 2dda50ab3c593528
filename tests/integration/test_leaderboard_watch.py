"""WatchTop against a real Redis: the first board at once, updates arrive,
coalescing holds, 200 watchers share one loop, a stalled watcher does not
delay another, and a disconnect frees everything."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from libs.timestamps import now_ms
from tests.support.leaderboard import (
    FakeScores,
    Stubs,
    leaderboard,
    serve_scores,
    update,
)
from tests.support.polling import eventually
from tests.support.rpcerrors import refused
from treasure.leaderboard.v1 import leaderboard_pb2 as pb

HUNT = "hw"


@pytest.fixture
async def scores():
    fake = FakeScores()
    async with serve_scores(fake) as address:
        yield fake, address


@pytest.fixture
async def lb(redis_urls, scores):
    async with leaderboard(redis_urls["leaderboard"], scores[1]) as stubs:
        await stubs.stub.RebuildBoard(pb.RebuildBoardRequest(hunt_id=HUNT), metadata=stubs.admin)
        yield stubs


def top(message) -> list[tuple[str, int]]:
    return [(e.player_id, e.total_points) for e in message.entries]


async def seed(lb: Stubs, n: int, width: int = 0) -> None:
    t = now_ms() - 1000
    await lb.submitter.submit_scores(
        [update(HUNT, f"p{i:03d}{'x' * width}", 1000 - i, t) for i in range(n)]
    )


async def loops_and_watchers(lb: Stubs) -> tuple[float, float]:
    return lb.metric("leaderboard_watch_loops"), lb.metric("leaderboard_watchers")


async def test_first_board_at_once_then_updates(lb):
    await seed(lb, 5)
    call = lb.stub.WatchTop(pb.WatchTopRequest(hunt_id=HUNT, limit=3), metadata=lb.client)
    first = await call.read()
    expected = await lb.stub.GetTop(pb.GetTopRequest(hunt_id=HUNT, limit=3), metadata=lb.client)
    assert top(first) == top(expected) == [("p000", 1000), ("p001", 999), ("p002", 998)]
    assert first.player_count == 5 and first.as_of.seconds > 0
    await lb.submitter.submit_scores([update(HUNT, "p004", 5000, now_ms(), version=2)])
    second = await call.read()
    assert top(second) == [("p004", 5000), ("p000", 1000), ("p001", 999)]
    # a change below the watched top N (and no new player) is not pushed
    await lb.submitter.submit_scores([update(HUNT, "p003", 997, now_ms(), version=2)])
    await lb.submitter.submit_scores([update(HUNT, "p001", 6000, now_ms(), version=2)])
    third = await call.read()
    assert top(third) == [("p001", 6000), ("p004", 5000), ("p000", 1000)]
    call.cancel()


async def test_updates_are_coalesced_to_the_rate(lb):
    await seed(lb, 3)
    call = lb.stub.WatchTop(pb.WatchTopRequest(hunt_id=HUNT, limit=3), metadata=lb.client)
    await call.read()
    received: list[pb.WatchTopResponse] = []

    async def read_all() -> None:
        while (message := await call.read()) is not grpc.aio.EOF:
            received.append(message)

    reader = asyncio.ensure_future(read_all())
    started = time.monotonic()
    for i in range(60):  # a new leader every 10 ms
        await lb.submitter.submit_scores([update(HUNT, "p000", 2000 + i, now_ms(), version=10 + i)])
        await asyncio.sleep(0.01)
    final = [("p000", 2059), ("p001", 999), ("p002", 998)]
    await eventually(lambda: _last_is(received, final), what="the final board")
    elapsed = time.monotonic() - started
    reader.cancel()
    call.cancel()
    # default rate 4/s: at most one board per 250 ms (+1 for phase), never one per update
    assert 1 <= len(received) <= 4 * elapsed + 2
    assert len(received) < 60


async def _last_is(received, expected) -> bool:
    return bool(received) and top(received[-1]) == expected


async def test_200_watchers_share_one_loop_and_leave_nothing_behind(lb):
    await seed(lb, 20)
    calls = [
        lb.stub.WatchTop(pb.WatchTopRequest(hunt_id=HUNT, limit=1 + i % 20), metadata=lb.client)
        for i in range(200)
    ]
    firsts = await asyncio.gather(*(c.read() for c in calls))
    assert all(len(m.entries) == 1 + i % 20 for i, m in enumerate(firsts))
    assert await loops_and_watchers(lb) == (1, 200)
    reads_before = lb.metric("leaderboard_watch_reads_total")
    await lb.submitter.submit_scores([update(HUNT, "p019", 9999, now_ms(), version=2)])
    seconds = await asyncio.gather(*(c.read() for c in calls))
    assert all(m.entries[0].player_id == "p019" for m in seconds)
    # one loop read the board for everyone (a few reads at most, not 200)
    assert lb.metric("leaderboard_watch_reads_total") - reads_before <= 3
    for call in calls:
        call.cancel()

    async def freed() -> bool:
        return await loops_and_watchers(lb) == (0, 0)

    await eventually(freed, what="every watcher and the loop to go")


async def test_a_stalled_watcher_does_not_delay_another(redis_urls, scores):
    async with leaderboard(redis_urls["leaderboard"], scores[1], LEADERBOARD_WATCH_RATE="50") as lb:
        await lb.stub.RebuildBoard(pb.RebuildBoardRequest(hunt_id=HUNT), metadata=lb.admin)
        await seed(lb, 100, width=50)  # ~8 KB a board: a stalled stream's window fills up
        stalled = lb.stub.WatchTop(pb.WatchTopRequest(hunt_id=HUNT, limit=100), metadata=lb.client)
        await stalled.read()  # then never read again while the others go on
        active = lb.stub.WatchTop(pb.WatchTopRequest(hunt_id=HUNT, limit=100), metadata=lb.client)
        await active.read()
        leader = ""
        for i in range(40):
            total = 10_000 + i
            await lb.submitter.submit_scores(
                [update(HUNT, f"p{i:03d}{'x' * 50}", total, now_ms(), version=2)]
            )
            # the active watcher sees each new leader although the other one is stalled
            while True:
                message = await active.read()
                if message.entries[0].total_points == total:
                    leader = message.entries[0].player_id
                    break
        assert leader == f"p039{'x' * 50}"
        # the stalled watcher is left with boards to skip, and ends on the latest one
        last = None
        while last is None or last.entries[0].total_points != 10_039:
            last = await stalled.read()
        assert last.entries[0].player_id == leader
        stalled.cancel()
        active.cancel()


async def test_watching_a_missing_board_builds_it_first(lb, scores):
    fake, _ = scores
    fake.put("cold", "p1", 7, now_ms(), 1)
    call = lb.stub.WatchTop(pb.WatchTopRequest(hunt_id="cold"), metadata=lb.client)
    try:
        assert top(await call.read()) == [("p1", 7)]
    finally:
        call.cancel()
    # A board that cannot be built (score is down) is UNAVAILABLE with a retry hint.
    fake.down = True
    err = await refused(
        lb.stub.WatchTop(pb.WatchTopRequest(hunt_id="unbuildable"), metadata=lb.client).read()
    )
    assert err.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_change_applied_here_is_pushed_without_waiting_for_the_poll(redis_urls, scores):
    # One board per 10 s at most, the marker polled once an hour: only SubmitScores's
    # nudge can push the change within the test (the loop's first read, the first
    # board, does not start the 10 s).
    settings = {"LEADERBOARD_WATCH_RATE": "0.1", "LEADERBOARD_WATCH_POLL_S": "3600"}
    async with leaderboard(redis_urls["leaderboard"], scores[1], **settings) as lb:
        await lb.stub.RebuildBoard(pb.RebuildBoardRequest(hunt_id=HUNT), metadata=lb.admin)
        await seed(lb, 3)
        call = lb.stub.WatchTop(pb.WatchTopRequest(hunt_id=HUNT, limit=3), metadata=lb.client)
        assert top(await call.read()) == [("p000", 1000), ("p001", 999), ("p002", 998)]
        reads = lb.metric("leaderboard_watch_reads_total")
        await lb.submitter.submit_scores([update(HUNT, "p002", 5000, now_ms(), version=2)])
        board = await asyncio.wait_for(call.read(), 5)
        assert top(board) == [("p002", 5000), ("p000", 1000), ("p001", 999)]
        assert lb.metric("leaderboard_watch_reads_total") - reads == 1
        call.cancel()
