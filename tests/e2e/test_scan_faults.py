"""kill -9 of the score service while scans are in flight: every scan that was
acknowledged or recorded is applied exactly once, totals equal the sum of the
unlocks, and the leaderboard agrees."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta

import grpc

from tests.e2e.test_scan_flow import request
from tests.support.hunts import create_hunt, spots
from tests.support.stack import CLIENT, Stack
from tools.verify import verify
from treasure.leaderboard.v1 import leaderboard_pb2
from treasure.scan.v1 import scan_pb2
from treasure.score.v1 import score_pb2

STACK_ENV = {
    "SCAN_RATE_LIMIT": "1000",
    "SCAN_RELAY_INTERVAL_S": "0.2",
    "SCAN_SCORE_TIMEOUT_S": "0.5",
    "SCAN_LEASE_S": "2",
}
PLAYERS = 12
CHECKPOINTS = 8


async def _play(
    stack: Stack, hunt_id: str, player: str, cps, acknowledged: list, failed: list
) -> None:
    scan = stack.scan()
    start = datetime.now(UTC) - timedelta(minutes=9)
    for i, spot in enumerate(cps):
        try:
            reply = await scan.SubmitScan(
                request(player, hunt_id, spot, at=start + timedelta(seconds=40 * i)),
                metadata=CLIENT,
                timeout=5,
            )
            acknowledged.append(reply)
        except grpc.aio.AioRpcError as err:
            failed.append(err.code())
        await asyncio.sleep(0.05)


async def test_kill_score_while_scans_are_in_flight(stack: Stack, db, stack_dsn):
    hunt_id = f"faults-{uuid.uuid4().hex[:6]}"
    cps = spots(hunt_id, CHECKPOINTS)
    await create_hunt(stack.geo(), hunt_id, cps)
    players = [f"p{i}-{uuid.uuid4().hex[:4]}" for i in range(PLAYERS)]
    acknowledged: list[scan_pb2.SubmitScanResponse] = []
    failed: list[grpc.StatusCode] = []

    playing = asyncio.gather(
        *(_play(stack, hunt_id, p, cps, acknowledged, failed) for p in players)
    )
    await asyncio.sleep(0.3)
    stack.kill("score")  # SIGKILL, mid-flight
    await asyncio.sleep(1.0)
    await stack.restart("score")
    await playing

    assert acknowledged, "no scan was acknowledged"
    assert any(r.status == scan_pb2.SCAN_STATUS_RECEIVED for r in acknowledged), (
        "the kill hit no scan in flight"
    )

    deadline = time.monotonic() + 45
    while await db.fetchval(
        "SELECT count(*) FROM scan.scans WHERE hunt_id = $1 AND status = 'received'", hunt_id
    ):
        assert time.monotonic() < deadline, "the relay did not apply every recorded scan"
        await asyncio.sleep(0.2)

    recorded = await db.fetch(
        "SELECT scan_id, player_id, outcome, points_awarded FROM scan.scans WHERE hunt_id = $1",
        hunt_id,
    )
    by_id = {r["scan_id"]: r for r in recorded}
    for reply in acknowledged:
        assert reply.scan_id in by_id, "an acknowledged scan was lost"
    assert all(
        r["outcome"] == "unlocked" for r in recorded
    )  # each checkpoint once per player, walking pace

    # Exactly once: one unlock per scan, one per (player, checkpoint).
    unlocks = await db.fetch(
        "SELECT scan_id, player_id FROM score.unlocks WHERE hunt_id = $1", hunt_id
    )
    assert sorted(u["scan_id"] for u in unlocks) == sorted(by_id)

    score = stack.score()
    board = stack.leaderboard()
    for player in players:
        expected = sum(r["points_awarded"] for r in recorded if r["player_id"] == player)
        got = await score.GetScore(
            score_pb2.GetScoreRequest(hunt_id=hunt_id, player_id=player), metadata=CLIENT
        )
        assert got.total_points == expected
        assert got.total_points == await db.fetchval(
            "SELECT total FROM score.player_scores WHERE hunt_id = $1 AND player_id = $2",
            hunt_id,
            player,
        )
        for _ in range(100):
            try:
                rank = await board.GetRank(
                    leaderboard_pb2.GetRankRequest(hunt_id=hunt_id, player_id=player),
                    metadata=CLIENT,
                )
                if rank.total_points == expected:
                    break
            except grpc.aio.AioRpcError as err:
                assert err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND)
            await asyncio.sleep(0.05)
        assert rank.total_points == expected

    report = await verify(hunt_id, stack_dsn, stack_dsn, stack.channel("leaderboard"), CLIENT)
    assert report.ok, report.problems
    assert report.counts["unlocks"] == len(recorded)
