"""The scan flow end to end: four services as separate processes, one Redis
each, Postgres. A client that knows only the protos and a client token."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from libs.timestamps import timestamp
from tests.support.hunts import LISBON, Spot, create_hunt, offset, spots
from tests.support.infra import flush
from tests.support.polling import eventually
from tests.support.scans import request, unique
from tests.support.stack import CLIENT, Stack
from tools.verify import verify
from treasure.common.v1 import common_pb2
from treasure.geo.v1 import geo_pb2
from treasure.leaderboard.v1 import leaderboard_pb2
from treasure.scan.v1 import scan_pb2
from treasure.score.v1 import score_pb2

STACK_ENV = {"SCAN_RATE_LIMIT": "8", "SCAN_RATE_WINDOW_S": "10", "SCAN_RELAY_INTERVAL_S": "0.2"}

UNLOCKED = scan_pb2.SCAN_OUTCOME_UNLOCKED


@pytest.fixture(scope="module")
async def hunt(stack: Stack) -> tuple[str, list[Spot]]:
    hunt_id = unique("lisbon")
    checkpoints = spots(hunt_id, 6)
    await create_hunt(stack.geo(), hunt_id, checkpoints)
    return hunt_id, checkpoints


async def test_players_walk_the_hunt(stack: Stack, hunt):
    hunt_id, cps = hunt
    scan = stack.scan()
    start = datetime.now(UTC) - timedelta(minutes=8)
    alice, bob = unique("alice"), unique("bob")
    # Alice walks cp0..cp3 a minute apart (150 m a minute); Bob follows two minutes behind.
    for i, spot in enumerate(cps[:4]):
        reply = await scan.SubmitScan(
            request(alice, hunt_id, spot, at=start + timedelta(minutes=i)), metadata=CLIENT
        )
        assert reply.outcome == UNLOCKED and reply.status == scan_pb2.SCAN_STATUS_APPLIED
        assert reply.first_finder and reply.points_awarded == spot.points + spot.bonus
        assert reply.checkpoint_id == spot.checkpoint_id and reply.checkpoint_name
    for i, spot in enumerate(cps[:3]):
        reply = await scan.SubmitScan(
            request(bob, hunt_id, spot, at=start + timedelta(minutes=2 + i)), metadata=CLIENT
        )
        assert reply.outcome == UNLOCKED and not reply.first_finder
        assert reply.points_awarded == spot.points
    alice_total = sum(s.points + s.bonus for s in cps[:4])
    bob_total = sum(s.points for s in cps[:3])

    progress = await stack.score().GetProgress(
        score_pb2.GetProgressRequest(hunt_id=hunt_id, player_id=alice), metadata=CLIENT
    )
    assert progress.total_points == alice_total and progress.checkpoints_found == 4
    assert [c.checkpoint_id for c in progress.checkpoints] == ["cp0", "cp1", "cp2", "cp3"]
    assert all(c.first_finder for c in progress.checkpoints)

    board = stack.leaderboard()

    async def ranked() -> list[tuple[int, str, int]] | None:
        try:
            top = await board.GetTop(
                leaderboard_pb2.GetTopRequest(hunt_id=hunt_id, limit=10), metadata=CLIENT
            )
        except grpc.aio.AioRpcError as err:
            # a board being built, never a partial one
            assert err.code() == grpc.StatusCode.UNAVAILABLE, err
            return None
        return [(e.rank, e.player_id, e.total_points) for e in top.entries]

    expected = [(1, alice, alice_total), (2, bob, bob_total)]
    await eventually(  # the outbox relay delivers within ~100 ms
        ranked,
        until=lambda ranks: ranks == expected,
        timeout_s=10,
        interval_s=0.05,
        what=f"the leaderboard to rank {expected}",
    )


async def test_each_outcome(stack: Stack, hunt):
    hunt_id, cps = hunt
    scan = stack.scan()
    now = datetime.now(UTC)
    player = unique("p")

    first = await scan.SubmitScan(
        request(player, hunt_id, cps[5], at=now - timedelta(minutes=5)), metadata=CLIENT
    )
    assert first.outcome == UNLOCKED

    again = await scan.SubmitScan(
        request(player, hunt_id, cps[5], at=now - timedelta(minutes=4)), metadata=CLIENT
    )
    assert again.outcome == scan_pb2.SCAN_OUTCOME_ALREADY_UNLOCKED and again.points_awarded == 0
    assert again.total_points == first.total_points

    far = offset(cps[4].lat, cps[4].lon, 200, 0)
    out = await scan.SubmitScan(
        request(player, hunt_id, cps[4], at=now - timedelta(minutes=3), where=far), metadata=CLIENT
    )
    assert out.outcome == scan_pb2.SCAN_OUTCOME_OUT_OF_RANGE and out.points_awarded == 0

    unknown = Spot("none", "no-such-tag", cps[4].lat, cps[4].lon, 0, 0)
    reply = await scan.SubmitScan(
        request(player, hunt_id, unknown, at=now - timedelta(minutes=2)), metadata=CLIENT
    )
    assert reply.outcome == scan_pb2.SCAN_OUTCOME_UNKNOWN_TAG

    # The last plausible position is 200 m north of cp4, 630 m from cp0: 5 s later is 126 m/s.
    cheat = await scan.SubmitScan(
        request(player, hunt_id, cps[0], at=now - timedelta(minutes=3) + timedelta(seconds=5)),
        metadata=CLIENT,
    )
    assert cheat.outcome == scan_pb2.SCAN_OUTCOME_IMPLAUSIBLE_SPEED and cheat.points_awarded == 0


async def test_inactive_hunts(stack: Stack):
    geo = stack.geo()
    scan = stack.scan()
    draft, future = unique("draft"), unique("future")
    draft_cps, future_cps = spots(draft, 1), spots(future, 1)
    await create_hunt(geo, draft, draft_cps, status=geo_pb2.HUNT_STATUS_DRAFT)
    await create_hunt(geo, future, future_cps, starts_in_s=3600)
    now = datetime.now(UTC)
    for hunt_id, cps in ((draft, draft_cps), (future, future_cps)):
        reply = await scan.SubmitScan(
            request(unique("p"), hunt_id, cps[0], at=now), metadata=CLIENT
        )
        assert reply.outcome == scan_pb2.SCAN_OUTCOME_HUNT_NOT_ACTIVE


async def test_a_duplicate_returns_the_first_answer(stack: Stack, hunt):
    hunt_id, cps = hunt
    scan = stack.scan()
    player = unique("dup")
    req = request(player, hunt_id, cps[1], at=datetime.now(UTC))
    first = await scan.SubmitScan(req, metadata=CLIENT)
    for _ in range(3):
        assert await scan.SubmitScan(req, metadata=CLIENT) == first
    got = await scan.GetScan(scan_pb2.GetScanRequest(scan_id=first.scan_id), metadata=CLIENT)
    assert got.scan.outcome == first.outcome and got.scan.client_scan_id == req.client_scan_id


async def test_100_concurrent_copies_make_one_unlock(stack: Stack, hunt, db):
    hunt_id, cps = hunt
    scan = stack.scan()
    player = unique("burst")
    req = request(player, hunt_id, cps[2], at=datetime.now(UTC))
    replies = await asyncio.gather(*(scan.SubmitScan(req, metadata=CLIENT) for _ in range(100)))
    assert all(r == replies[0] for r in replies)
    assert replies[0].outcome == UNLOCKED
    assert await db.fetchval("SELECT count(*) FROM scan.scans WHERE player_id = $1", player) == 1
    score = await stack.score().GetScore(
        score_pb2.GetScoreRequest(hunt_id=hunt_id, player_id=player), metadata=CLIENT
    )
    assert score.total_points == cps[2].points and score.checkpoints_found == 1


async def test_rate_limit_answers_resource_exhausted_with_a_delay(stack: Stack, hunt):
    hunt_id, cps = hunt
    scan = stack.scan()
    player = unique("spam")
    now = datetime.now(UTC)
    codes = []
    for _ in range(9):
        try:
            await scan.SubmitScan(
                request(player, hunt_id, Spot("x", "no-such-tag", *LISBON, 0, 0), at=now),
                metadata=CLIENT,
            )
            codes.append(grpc.StatusCode.OK)
        except grpc.aio.AioRpcError as err:
            codes.append(err.code())
            details = status_pb2.Status.FromString(
                dict(err.trailing_metadata())["grpc-status-details-bin"]
            )
            retry = error_details_pb2.RetryInfo()
            assert any(d.Unpack(retry) for d in details.details)
            assert 0 < retry.retry_delay.ToTimedelta().total_seconds() <= 10
    assert codes == [grpc.StatusCode.OK] * 8 + [grpc.StatusCode.RESOURCE_EXHAUSTED]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda r: setattr(r, "player_id", "bad id"), "player_id"),
        (lambda r: setattr(r, "hunt_id", "{h}"), "hunt_id"),
        (lambda r: setattr(r, "tag_id", ""), "tag_id"),
        (lambda r: setattr(r, "client_scan_id", "x" * 65), "client_scan_id"),
        (lambda r: r.location.CopyFrom(common_pb2.GeoPoint(lat=91, lon=0)), "location.lat"),
        (lambda r: r.ClearField("location"), "location"),
        (lambda r: setattr(r, "accuracy_m", -1), "accuracy_m"),
        (lambda r: setattr(r, "accuracy_m", float("nan")), "accuracy_m"),
        (
            lambda r: r.scanned_at.CopyFrom(timestamp(datetime.now(UTC) + timedelta(minutes=2))),
            "scanned_at",
        ),
        (
            lambda r: r.scanned_at.CopyFrom(timestamp(datetime.now(UTC) - timedelta(hours=1))),
            "scanned_at",
        ),
        (lambda r: r.ClearField("scanned_at"), "scanned_at"),
    ],
)
async def test_bad_fields_are_invalid_argument_and_write_nothing(
    stack: Stack, hunt, db, change, field
):
    hunt_id, cps = hunt
    player = unique("bad")
    req = request(player, hunt_id, cps[0], at=datetime.now(UTC))
    change(req)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stack.scan().SubmitScan(req, metadata=CLIENT)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(f"{field}:")
    assert await db.fetchval("SELECT count(*) FROM scan.scans WHERE player_id = $1", player) == 0


async def test_list_player_scans_pages_newest_first(stack: Stack, hunt):
    hunt_id, cps = hunt
    scan = stack.scan()
    player = unique("lister")
    base = datetime.now(UTC) - timedelta(minutes=6)
    ids = []
    for i in range(5):
        reply = await scan.SubmitScan(
            request(player, hunt_id, cps[i], at=base + timedelta(minutes=i)), metadata=CLIENT
        )
        ids.append(reply.scan_id)
    seen, token = [], ""
    while True:
        page = await scan.ListPlayerScans(
            scan_pb2.ListPlayerScansRequest(player_id=player, page_size=2, page_token=token),
            metadata=CLIENT,
        )
        seen += [s.scan_id for s in page.scans]
        token = page.next_page_token
        if not token:
            break
    assert seen == ids[::-1]


async def test_a_flushed_leaderboard_comes_back_equal_to_postgres(
    stack: Stack, hunt, db, stack_dsn
):
    hunt_id, cps = hunt
    scan = stack.scan()
    base = datetime.now(UTC) - timedelta(minutes=7)
    for i in range(3):  # scores submitted out of order end in the right order
        await scan.SubmitScan(
            request(unique("late"), hunt_id, cps[i], at=base + timedelta(minutes=i)),
            metadata=CLIENT,
        )
    truth = dict(
        await db.fetch(
            "SELECT player_id, total FROM score.player_scores WHERE hunt_id = $1", hunt_id
        )
    )
    await flush(stack.redis["leaderboard"].url)

    board = stack.leaderboard()
    # The first read after the flush rebuilds the board within its deadline:
    # it answers the whole board at once, never a partial one nor UNAVAILABLE.
    top = await board.GetTop(
        leaderboard_pb2.GetTopRequest(hunt_id=hunt_id, limit=1000), metadata=CLIENT, timeout=5
    )
    assert {e.player_id: e.total_points for e in top.entries} == truth
    ranks = [(e.total_points, e.reached_at.ToDatetime()) for e in top.entries]
    assert [r[0] for r in ranks] == sorted((r[0] for r in ranks), reverse=True)
    first = top.entries[0]
    rank = await board.GetRank(
        leaderboard_pb2.GetRankRequest(hunt_id=hunt_id, player_id=first.player_id), metadata=CLIENT
    )
    assert (
        rank.rank == 1
        and rank.total_points == first.total_points
        and rank.player_count == len(truth)
    )
    around = await board.GetAround(
        leaderboard_pb2.GetAroundRequest(hunt_id=hunt_id, player_id=first.player_id, n=2),
        metadata=CLIENT,
    )
    assert [e.player_id for e in around.entries] == [e.player_id for e in top.entries[:3]]
    report = await verify(hunt_id, stack_dsn, stack_dsn, stack.channel("leaderboard"), CLIENT)
    assert report.ok, report.problems
