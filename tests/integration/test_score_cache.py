"""The score hot tier on a real Redis and a real 3-master Redis Cluster: the
version check under racing writers, complete-or-nothing checkpoint sets, and
refills that never overwrite newer data."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

import pytest

from libs import rediskit
from libs.localinfra import RedisCluster
from libs.metrics import Metrics
from services.score import keys
from services.score.cache import HotTier
from services.score.model import Progress, Score, UnlockedCheckpoint
from tests.conftest import REPO, RUN_DIR

AT = datetime(2026, 6, 1, tzinfo=UTC)


def _state(version: int) -> tuple[Score, UnlockedCheckpoint]:
    """The score after the player's `version`-th unlock (checkpoint cp<version>)."""
    score = Score(
        total_points=10 * version,
        checkpoints_found=version,
        reached_at=AT + timedelta(seconds=version),
        version=version,
    )
    cp = UnlockedCheckpoint(
        checkpoint_id=f"cp{version}",
        points_awarded=10,
        first_finder=version % 2 == 0,
        unlocked_at=AT + timedelta(seconds=version),
        scan_id=f"s{version}",
    )
    return score, cp


def _progress(version: int) -> Progress:
    return Progress(
        score=_state(version)[0], checkpoints=tuple(_state(v)[1] for v in range(1, version + 1))
    )


@pytest.fixture
async def redis(redis_urls):
    client = rediskit.connect(redis_urls["score"])
    yield client
    await client.aclose()


def _tier(client, **kwargs) -> HotTier:
    return HotTier(client, Metrics("score-test"), timeout_s=5.0, **kwargs)


async def test_1000_racing_writes_leave_the_newest_version(redis):
    tier = _tier(redis)
    versions = list(range(1, 1001))
    random.shuffle(versions)
    await asyncio.gather(*(tier.record_unlock("h1", "p1", *_state(v)) for v in versions))
    cached = await tier.score("h1", "p1")
    assert cached == _state(1000)[0]
    # Written out of order, the set cannot be known complete: never served half.
    progress = await tier.progress("h1", "p1")
    assert progress is None or progress == _progress(1000)
    await tier.fill_progress("h1", "p1", _progress(1000))
    assert await tier.progress("h1", "p1") == _progress(1000)


async def test_in_order_writes_keep_the_set_complete_and_refills_never_go_back(redis):
    tier = _tier(redis)
    for v in range(1, 6):
        await tier.record_unlock("h1", "p2", *_state(v))
    assert await tier.progress("h1", "p2") == _progress(5)
    await tier.fill_progress("h1", "p2", _progress(3))  # an old read from Postgres
    await tier.fill_score("h1", "p2", _state(2)[0])
    assert await tier.progress("h1", "p2") == _progress(5)
    await redis.delete(keys.player_checkpoints("h1", "p2"))  # evicted
    await tier.record_unlock("h1", "p2", *_state(6))
    assert await tier.progress("h1", "p2") is None  # incomplete: a miss, not a wrong answer
    assert await tier.score("h1", "p2") == _state(6)[0]
    ttl = await redis.pttl(keys.player_score("h1", "p2"))
    assert 0 < ttl <= 30_000


async def test_a_dead_redis_is_a_miss_and_opens_the_breaker():
    client = rediskit.connect("redis://127.0.0.1:1/0")  # nothing listens there
    metrics = Metrics("score-test")
    tier = HotTier(client, metrics, timeout_s=0.05, breaker_failures=2, breaker_s=60)
    try:
        await tier.record_unlock("h1", "p1", *_state(1))  # two failures: breaker opens
        writes = metrics.registry.get_sample_value("score_hot_tier_errors_total", {"op": "write"})
        assert writes == 2
        assert await tier.score("h1", "p1") is None  # dirty here: not even asked
        assert await tier.score("h1", "p2") is None  # breaker open: skipped at once
        assert await tier.progress("h1", "p2") is None
        skipped = metrics.registry.get_sample_value("score_hot_tier_errors_total", {"op": "read"})
        assert skipped == 2
    finally:
        await client.aclose()


async def test_the_scripts_work_on_a_redis_cluster(tmp_path):
    cluster = RedisCluster(
        REPO / "services" / "score" / "redis.conf", RUN_DIR / f"cl-{tmp_path.name}"
    )
    cluster.start()
    client = rediskit.connect(cluster.url)
    try:
        tier = _tier(client)
        for player in ("p1", "p2", "p3", "p4"):
            for v in range(1, 4):
                await tier.record_unlock("h9", player, *_state(v))
            assert await tier.progress("h9", player) == _progress(3)
        await client.delete(keys.player_score("h9", "p1"))
        await tier.fill_progress("h9", "p1", _progress(3))
        assert await tier.score("h9", "p1") == _state(3)[0]
        slots = {client.keyslot(keys.player_score("h9", p)) for p in ("p1", "p2", "p3", "p4")}
        assert len(slots) > 1
    finally:
        await client.aclose()
        cluster.stop()
