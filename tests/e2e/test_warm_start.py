"""Warm before serving, end to end: services restarted on an empty Redis (a
Redis that came back empty, a new node) finish every warm-up step before
they report SERVING, with the real peers and tokens. The first calls then
find the board built and the tags in Redis: nothing is rebuilt or read
from Postgres under them."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from tests.support.hunts import create_hunt, spots
from tests.support.scans import request, unique
from tests.support.services import scrape_metrics
from tests.support.stack import CLIENT, Stack
from treasure.leaderboard.v1 import leaderboard_pb2 as lb
from treasure.scan.v1 import scan_pb2

REBUILT = 'leaderboard_rebuilds_total{outcome="ok"}'
TAG_FROM_POSTGRES = 'cache_requests_total{cache="tag",result="miss",tier="redis"}'


async def test_services_restarted_on_an_empty_redis_serve_warm(stack: Stack):
    hunt_id = unique("warm")
    cps = spots(hunt_id, 3)
    await create_hunt(stack.geo(), hunt_id, cps)
    players = [unique(f"warm-{i}") for i in range(4)]
    for i, player in enumerate(players):
        scanned = await stack.scan().SubmitScan(
            request(player, hunt_id, cps[i % len(cps)], at=datetime.now(UTC)), metadata=CLIENT
        )
        assert scanned.outcome == scan_pb2.SCAN_OUTCOME_UNLOCKED, scanned

    # Stopped first, so that no running process refills its Redis; geo starts
    # first, as the leaderboard's warm-up asks it which hunts are played.
    for name in ("leaderboard", "geo"):
        await stack.stop_service(name)
        await stack.flushall(name)
    for name in ("geo", "leaderboard"):
        await stack.restart(name)
    warm = {name: scrape_metrics(stack.metrics_ports[name]) for name in ("geo", "leaderboard")}
    for name, metrics in warm.items():
        assert metrics["warmup_complete"] == 1.0, (name, stack.log(name)[-3000:])
    assert warm["leaderboard"].get(REBUILT, 0) >= 1  # before SERVING, before any call

    top = await stack.leaderboard().GetTop(
        lb.GetTopRequest(hunt_id=hunt_id, limit=10), metadata=CLIENT
    )
    assert sorted(e.player_id for e in top.entries) == sorted(players)
    again = await stack.scan().SubmitScan(
        request(players[0], hunt_id, cps[1], at=datetime.now(UTC)), metadata=CLIENT
    )
    assert again.outcome == scan_pb2.SCAN_OUTCOME_UNLOCKED, again
    await asyncio.sleep(0.5)  # the submit reaches the leaderboard through score's outbox
    after = {name: scrape_metrics(stack.metrics_ports[name]) for name in ("geo", "leaderboard")}
    assert after["leaderboard"].get(REBUILT, 0) == warm["leaderboard"].get(REBUILT, 0)
    assert after["geo"].get(TAG_FROM_POSTGRES, 0) == 0  # the tag came from L1 or Redis
