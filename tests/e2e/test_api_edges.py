"""The edge cases outside clients ran into, end to end with the four services
as processes: idempotency keys bound to their request, unknown hunts, boards
of hunts nobody scored in, and catalog checks. Each test asks as a client that
knows only the protos would, and checks what Postgres recorded."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from tests.support.hunts import ADMIN, LISBON, Spot, create_hunt, offset, spots
from tests.support.infra import cluster_mode
from tests.support.polling import eventually
from tests.support.rpcerrors import bad_fields, error_info, refused
from tests.support.scans import request, unique
from tests.support.stack import CLIENT, Stack
from treasure.common.v1 import common_pb2
from treasure.geo.v1 import geo_pb2
from treasure.leaderboard.v1 import leaderboard_pb2 as lb
from treasure.scan.v1 import scan_pb2
from treasure.score.v1 import score_pb2

MAX_AGE_S = 60
STACK_ENV = {"SCAN_MAX_SCAN_AGE_S": str(MAX_AGE_S), "SCAN_RELAY_INTERVAL_S": "0.2"}

UNLOCKED = scan_pb2.SCAN_OUTCOME_UNLOCKED


@pytest.fixture(scope="module")
async def hunts(stack: Stack) -> tuple[tuple[str, list[Spot]], tuple[str, list[Spot]]]:
    """Two published hunts, each with its own tags."""
    made = []
    for name in ("edges-a", "edges-b"):
        hunt_id = unique(name)
        checkpoints = spots(hunt_id, 3)
        await create_hunt(stack.geo(), hunt_id, checkpoints)
        made.append((hunt_id, checkpoints))
    return made[0], made[1]


async def _rows(db, player: str) -> list[tuple[str, str, str]]:
    rows = await db.fetch(
        "SELECT scan_id, hunt_id, tag_id FROM scan.scans WHERE player_id = $1 ORDER BY scan_id",
        player,
    )
    return [(r["scan_id"], r["hunt_id"], r["tag_id"]) for r in rows]


def _assert_key_reused(err: grpc.aio.AioRpcError, first_scan_id: str) -> None:
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, err
    info = error_info(err)
    assert info.reason == "IDEMPOTENCY_KEY_REUSED"
    assert info.metadata["scan_id"] == first_scan_id


# -- idempotency keys ---------------------------------------------------------


async def test_one_key_in_two_hunts_is_two_scans(stack: Stack, hunts, db):
    (hunt_a, cps_a), (hunt_b, cps_b) = hunts
    scan = stack.scan()
    player, key = unique("perhunt"), "scan-1"  # a device that numbers its scans per hunt
    now = datetime.now(UTC)
    first = await scan.SubmitScan(
        request(player, hunt_a, cps_a[0], at=now, client_scan_id=key), metadata=CLIENT
    )
    second = await scan.SubmitScan(
        request(player, hunt_b, cps_b[0], at=now, client_scan_id=key), metadata=CLIENT
    )
    assert (first.outcome, second.outcome) == (UNLOCKED, UNLOCKED)
    assert (first.hunt_id, second.hunt_id) == (hunt_a, hunt_b)
    assert first.scan_id != second.scan_id
    assert second.points_awarded == cps_b[0].points + cps_b[0].bonus
    rows = await _rows(db, player)
    assert rows == [
        (first.scan_id, hunt_a, cps_a[0].tag_id),
        (second.scan_id, hunt_b, cps_b[0].tag_id),
    ]
    for hunt_id, reply in ((hunt_a, first), (hunt_b, second)):
        score = await stack.score().GetScore(
            score_pb2.GetScoreRequest(hunt_id=hunt_id, player_id=player), metadata=CLIENT
        )
        assert score.total_points == reply.total_points == reply.points_awarded


async def test_a_key_reused_for_another_scan_is_refused_and_writes_nothing(stack: Stack, hunts, db):
    (hunt_id, cps), _ = hunts
    scan = stack.scan()
    player, key = unique("reuse"), unique("c")
    at = datetime.now(UTC) - timedelta(seconds=5)
    original = request(player, hunt_id, cps[1], at=at, client_scan_id=key)
    first = await scan.SubmitScan(original, metadata=CLIENT)
    assert first.outcome == UNLOCKED

    elsewhere = offset(cps[1].lat, cps[1].lon, 3, 0)
    variants = {
        "tag": request(player, hunt_id, cps[2], at=at, client_scan_id=key),
        "location": request(player, hunt_id, cps[1], at=at, client_scan_id=key, where=elsewhere),
        "accuracy": request(player, hunt_id, cps[1], at=at, client_scan_id=key, accuracy=9.0),
        "scanned_at": request(
            player, hunt_id, cps[1], at=at + timedelta(seconds=1), client_scan_id=key
        ),
    }
    for what, variant in variants.items():
        err = await refused(scan.SubmitScan(variant, metadata=CLIENT))
        _assert_key_reused(err, first.scan_id)
        assert key in err.details(), what
    # Nothing was recorded or unlocked by the refused copies; the exact repeat
    # still gets the first answer.
    assert await _rows(db, player) == [(first.scan_id, hunt_id, cps[1].tag_id)]
    assert await scan.SubmitScan(original, metadata=CLIENT) == first
    progress = await stack.score().GetProgress(
        score_pb2.GetProgressRequest(hunt_id=hunt_id, player_id=player), metadata=CLIENT
    )
    assert [c.checkpoint_id for c in progress.checkpoints] == [cps[1].checkpoint_id]


async def test_concurrent_copies_with_different_requests_make_one_scan(stack: Stack, hunts, db):
    (hunt_id, cps), _ = hunts
    scan = stack.scan()
    player, key = unique("race"), unique("c")
    at = datetime.now(UTC)
    copies = [request(player, hunt_id, cps[i % 2], at=at, client_scan_id=key) for i in range(10)]
    results = await asyncio.gather(
        *(scan.SubmitScan(c, metadata=CLIENT) for c in copies), return_exceptions=True
    )
    answers = [r for r in results if not isinstance(r, BaseException)]
    refusals = [r for r in results if isinstance(r, BaseException)]
    rows = await _rows(db, player)
    assert len(rows) == 1
    scan_id, _, tag_id = rows[0]
    # Every copy of the recorded request has its answer; every other is refused.
    winners = sum(1 for c in copies if c.tag_id == tag_id)
    assert len(answers) == winners and {a.scan_id for a in answers} == {scan_id}
    assert len(refusals) == len(copies) - winners
    for err in refusals:
        assert isinstance(err, grpc.aio.AioRpcError)
        _assert_key_reused(err, scan_id)


async def test_exact_repeats_survive_a_redis_flush_and_a_crash(stack: Stack, hunts):
    (hunt_id, cps), _ = hunts
    scan = stack.scan()
    player = unique("survive")
    original = request(player, hunt_id, cps[0], at=datetime.now(UTC))
    first = await scan.SubmitScan(original, metadata=CLIENT)
    other_tag = request(
        player, hunt_id, cps[1], at=datetime.now(UTC), client_scan_id=original.client_scan_id
    )

    await stack.flushall("scan")  # the answer and the fingerprint are gone from Redis
    assert await scan.SubmitScan(original, metadata=CLIENT) == first
    _assert_key_reused(await refused(scan.SubmitScan(other_tag, metadata=CLIENT)), first.scan_id)

    stack.kill("scan")
    await stack.restart("scan")
    scan = stack.scan()
    assert await scan.SubmitScan(original, metadata=CLIENT) == first
    _assert_key_reused(await refused(scan.SubmitScan(other_tag, metadata=CLIENT)), first.scan_id)


async def test_repeats_of_a_scan_applied_by_the_relay(stack: Stack, hunts, db):
    (hunt_id, cps), _ = hunts
    scan = stack.scan()
    player = unique("relayed")
    original = request(player, hunt_id, cps[2], at=datetime.now(UTC))
    reused = request(
        player, hunt_id, cps[0], at=datetime.now(UTC), client_scan_id=original.client_scan_id
    )
    stack.kill("score")
    try:
        received = await scan.SubmitScan(original, metadata=CLIENT, timeout=10)
        assert received.status == scan_pb2.SCAN_STATUS_RECEIVED and received.hunt_id == hunt_id
        _assert_key_reused(
            await refused(scan.SubmitScan(reused, metadata=CLIENT, timeout=10)),
            received.scan_id,
        )
    finally:
        await stack.restart("score")

    async def applied() -> scan_pb2.SubmitScanResponse:
        return await scan.SubmitScan(original, metadata=CLIENT, timeout=10)

    final = await eventually(
        applied,
        until=lambda r: r.status == scan_pb2.SCAN_STATUS_APPLIED,
        timeout_s=20,
        interval_s=0.2,
        what="the relay to apply the received scan",
    )
    assert final.scan_id == received.scan_id and final.outcome == UNLOCKED
    _assert_key_reused(await refused(scan.SubmitScan(reused, metadata=CLIENT)), received.scan_id)
    assert len(await _rows(db, player)) == 1


async def test_a_late_retry_gets_its_answer_but_a_new_scan_that_old_isrefused(
    stack: Stack, hunts, db
):
    (hunt_id, cps), _ = hunts
    scan = stack.scan()
    player = unique("late")
    at = datetime.now(UTC) - timedelta(seconds=MAX_AGE_S - 1.5)
    original = request(player, hunt_id, cps[0], at=at)
    first = await scan.SubmitScan(original, metadata=CLIENT)
    assert first.outcome == UNLOCKED
    await asyncio.sleep(2.0)  # scanned_at is now past the max scan age
    assert await scan.SubmitScan(original, metadata=CLIENT) == first
    moved = request(player, hunt_id, cps[1], at=at, client_scan_id=original.client_scan_id)
    _assert_key_reused(await refused(scan.SubmitScan(moved, metadata=CLIENT)), first.scan_id)
    new = request(player, hunt_id, cps[1], at=at)
    err = await refused(scan.SubmitScan(new, metadata=CLIENT))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and bad_fields(err) == ["scanned_at"]
    assert len(await _rows(db, player)) == 1


# -- unknown hunts --------------------------------------------------------------


async def test_a_scan_for_a_hunt_that_does_not_exist(stack: Stack, hunts, db):
    (hunt_id, cps), (other_hunt, other_cps) = hunts
    scan = stack.scan()
    player = unique("nohunt")
    ghost = unique("no-such-hunt")
    reply = await scan.SubmitScan(
        request(player, ghost, cps[0], at=datetime.now(UTC)), metadata=CLIENT
    )
    assert reply.outcome == scan_pb2.SCAN_OUTCOME_UNKNOWN_HUNT
    assert reply.status == scan_pb2.SCAN_STATUS_APPLIED and reply.hunt_id == ghost
    assert (reply.points_awarded, reply.total_points, reply.checkpoint_id) == (0, 0, "")
    # A tag of another hunt is still an unknown tag.
    stray = await scan.SubmitScan(
        request(player, hunt_id, other_cps[0], at=datetime.now(UTC)), metadata=CLIENT
    )
    assert stray.outcome == scan_pb2.SCAN_OUTCOME_UNKNOWN_TAG
    # It counts nowhere: no unlock, no score, no board.
    assert await db.fetchval("SELECT count(*) FROM score.unlocks WHERE player_id = $1", player) == 0
    err = await refused(
        stack.score().GetScore(
            score_pb2.GetScoreRequest(hunt_id=ghost, player_id=player), metadata=CLIENT
        )
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND
    err = await refused(
        stack.leaderboard().GetTop(lb.GetTopRequest(hunt_id=ghost), metadata=CLIENT)
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND


# -- boards of hunts with nobody on them ------------------------------------------


async def test_a_new_hunt_has_an_empty_board_at_once(stack: Stack):
    hunt_id = unique("empty")
    await create_hunt(stack.geo(), hunt_id, spots(hunt_id, 1))
    board = stack.leaderboard()
    top = await board.GetTop(lb.GetTopRequest(hunt_id=hunt_id, limit=10), metadata=CLIENT)
    assert list(top.entries) == [] and top.player_count == 0 and top.next_page_token == ""
    for call in (
        board.GetRank(lb.GetRankRequest(hunt_id=hunt_id, player_id="nobody"), metadata=CLIENT),
        board.GetAround(lb.GetAroundRequest(hunt_id=hunt_id, player_id="nobody"), metadata=CLIENT),
    ):
        err = await refused(call)
        assert err.code() == grpc.StatusCode.NOT_FOUND
        assert error_info(err).reason == "PLAYER_NOT_ON_BOARD"
    watch = board.WatchTop(lb.WatchTopRequest(hunt_id=hunt_id, limit=5), metadata=CLIENT)
    try:
        first = await asyncio.wait_for(watch.read(), 5)
        assert list(first.entries) == [] and first.player_count == 0
    finally:
        watch.cancel()
    score = await stack.score().GetScore(
        score_pb2.GetScoreRequest(hunt_id=hunt_id, player_id="nobody"), metadata=CLIENT
    )
    assert (score.total_points, score.checkpoints_found) == (0, 0)
    progress = await stack.score().GetProgress(
        score_pb2.GetProgressRequest(hunt_id=hunt_id, player_id="nobody"), metadata=CLIENT
    )
    assert (progress.total_points, list(progress.checkpoints)) == (0, [])


async def test_every_read_of_a_hunt_that_does_not_exist_is_not_found(stack: Stack):
    ghost = unique("ghost")
    board, score = stack.leaderboard(), stack.score()
    calls = {
        "GetTop": board.GetTop(lb.GetTopRequest(hunt_id=ghost), metadata=CLIENT),
        "GetRank": board.GetRank(lb.GetRankRequest(hunt_id=ghost, player_id="p"), metadata=CLIENT),
        "GetAround": board.GetAround(
            lb.GetAroundRequest(hunt_id=ghost, player_id="p"), metadata=CLIENT
        ),
        "GetScore": score.GetScore(
            score_pb2.GetScoreRequest(hunt_id=ghost, player_id="p"), metadata=CLIENT
        ),
        "GetProgress": score.GetProgress(
            score_pb2.GetProgressRequest(hunt_id=ghost, player_id="p"), metadata=CLIENT
        ),
    }
    for name, call in calls.items():
        err = await refused(call)
        assert err.code() == grpc.StatusCode.NOT_FOUND, name
        assert error_info(err).reason == "HUNT_NOT_FOUND", name
    watch = board.WatchTop(lb.WatchTopRequest(hunt_id=ghost), metadata=CLIENT)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await asyncio.wait_for(watch.read(), 5)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    err = await refused(board.RebuildBoard(lb.RebuildBoardRequest(hunt_id=ghost), metadata=ADMIN))
    assert err.code() == grpc.StatusCode.NOT_FOUND and error_info(err).reason == "HUNT_NOT_FOUND"
    # No board was made for it, on any master.
    leftovers = []
    for node in stack.redis_nodes("leaderboard"):
        client = stack.redis_client(node)
        try:
            leftovers += [k async for k in client.scan_iter(match=f"*{ghost}*")]
        finally:
            await client.aclose()
    assert len(stack.redis_nodes("leaderboard")) == (3 if cluster_mode() else 1)
    assert leftovers == []


async def test_a_board_missing_from_redis_is_built_within_the_call(stack: Stack, hunts):
    (hunt_id, cps), _ = hunts
    scan = stack.scan()
    player = unique("builder")
    reply = await scan.SubmitScan(
        request(player, hunt_id, cps[0], at=datetime.now(UTC)), metadata=CLIENT
    )
    assert reply.status == scan_pb2.SCAN_STATUS_APPLIED
    board = stack.leaderboard()

    async def on_board() -> list[str]:
        top = await board.GetTop(lb.GetTopRequest(hunt_id=hunt_id, limit=1000), metadata=CLIENT)
        return [e.player_id for e in top.entries]

    await eventually(on_board, until=lambda ids: player in ids, what=f"{player} on the board")
    await stack.flushall("leaderboard")
    await asyncio.sleep(0.3)  # past the GetTop cache (LEADERBOARD_TOP_CACHE_MS)
    rank = await board.GetRank(
        lb.GetRankRequest(hunt_id=hunt_id, player_id=player), metadata=CLIENT
    )
    assert rank.total_points == reply.total_points
    assert player in await on_board()


# -- catalog checks -------------------------------------------------------------


async def test_a_checkpoint_off_the_hunts_grid_is_invalid(stack: Stack):
    geo = stack.geo()
    hunt_id = unique("grid")
    await create_hunt(geo, hunt_id, spots(hunt_id, 1))
    porto = geo_pb2.Checkpoint(
        checkpoint_id="porto",
        hunt_id=hunt_id,
        tag_id=unique("porto-tag"),
        name="Ribeira, Porto",
        location=common_pb2.GeoPoint(lat=41.1406, lon=-8.6132),
        radius_m=30,
        points=10,
    )
    err = await refused(
        geo.UpsertCheckpoint(geo_pb2.UpsertCheckpointRequest(checkpoint=porto), metadata=ADMIN)
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(err) == ["checkpoint.location"]
    listed = await geo.ListCheckpoints(
        geo_pb2.ListCheckpointsRequest(hunt_id=hunt_id, include_inactive=True), metadata=ADMIN
    )
    assert [c.checkpoint_id for c in listed.checkpoints] == ["cp0"]

    # A grid that would leave cp0 off it is refused too; one that keeps it is fine.
    hunt = (await geo.GetHunt(geo_pb2.GetHuntRequest(hunt_id=hunt_id), metadata=ADMIN)).hunt
    far_grid = geo_pb2.TileGrid(
        origin=common_pb2.GeoPoint(lat=41.1, lon=-8.7), tile_size_m=250, columns=10, rows=10
    )
    moved = geo_pb2.Hunt(hunt_id=hunt_id, grid=far_grid)
    err = await refused(
        geo.UpdateHunt(
            geo_pb2.UpdateHuntRequest(hunt=moved, update_mask={"paths": ["grid"]}), metadata=ADMIN
        )
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and bad_fields(err) == ["hunt.grid"]
    after = (await geo.GetHunt(geo_pb2.GetHuntRequest(hunt_id=hunt_id), metadata=ADMIN)).hunt
    assert after.grid == hunt.grid
    south, west = offset(*LISBON, -2000, -2000)
    wider = geo_pb2.TileGrid(
        origin=common_pb2.GeoPoint(lat=south, lon=west), tile_size_m=500, columns=20, rows=20
    )
    updated = await geo.UpdateHunt(
        geo_pb2.UpdateHuntRequest(
            hunt=geo_pb2.Hunt(hunt_id=hunt_id, grid=wider), update_mask={"paths": ["grid"]}
        ),
        metadata=ADMIN,
    )
    assert updated.hunt.grid == wider
