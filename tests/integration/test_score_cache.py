"""The score hot tier on a real Redis and a real 3-master Redis Cluster: the
version check under racing writers, complete-or-nothing checkpoint sets,
refills that never overwrite newer data, and racing writers while their slot
moves to another master."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis

from libs import rediskit
from libs.metrics import Metrics
from services.score import keys
from services.score.cache import HotTier
from services.score.model import Progress, Score, UnlockedCheckpoint
from tests.support.infra import REPO
from tools.localinfra import RedisCluster

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
    while versions == sorted(versions):
        random.shuffle(versions)
    await asyncio.gather(*(tier.record_unlock("h1", "p1", *_state(v)) for v in versions))
    cached = await tier.score("h1", "p1")
    assert cached == _state(1000)[0]
    # Written out of order, the set cannot be known complete: never served half.
    # (Only writes landing in version order, 1 to 1000, would keep it complete:
    # odds of 1 in 1000! for shuffled, concurrent writes.)
    assert await tier.progress("h1", "p1") is None
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
    # suspect_s=0: p2 is asked of Redis at once (not first read from Postgres
    # as keys are for a TTL after start), so that the breaker is what skips it.
    tier = HotTier(client, metrics, timeout_s=0.05, breaker_failures=2, breaker_s=60, suspect_s=0.0)
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
    cluster = RedisCluster(REPO / "services" / "score" / "redis.conf", tmp_path / "cluster")
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


async def _move_slot(client, slot: int, frm: str, to: str) -> None:
    """Reshards `slot` from master `frm` to master `to` as redis-cli does
    (IMPORTING, MIGRATING, MIGRATE the keys, SETSLOT NODE on both)."""
    source = client.get_node(node_name=frm)
    target = client.get_node(node_name=to)
    src = aioredis.Redis(host=source.host, port=source.port, decode_responses=True)
    dst = aioredis.Redis(host=target.host, port=target.port, decode_responses=True)
    try:
        src_id = await src.execute_command("CLUSTER", "MYID")
        dst_id = await dst.execute_command("CLUSTER", "MYID")
        await dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        await src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
        for key in await src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000):
            await src.execute_command("MIGRATE", target.host, target.port, key, 0, 5000)
        for node in (dst, src):
            await node.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
    finally:
        await src.aclose()
        await dst.aclose()


async def test_racing_writes_survive_their_slot_moving_to_another_master(tmp_path):
    """Resharding (or a failover) answers every in-flight command with MOVED.
    With redis-py's default every fifth MOVED closed the connections other
    writers were using: their writes failed, some with an AttributeError that
    escaped the hot tier. rediskit's cluster client patches the slot instead."""
    cluster = RedisCluster(REPO / "services" / "score" / "redis.conf", tmp_path / "cluster")
    cluster.start()
    client = rediskit.connect(cluster.url)
    metrics = Metrics("score-test")
    tier = HotTier(client, metrics, timeout_s=5.0)
    try:
        await rediskit.wait_for(client, 5.0)
        slot = client.keyslot(keys.player_score("h1", "p1"))
        masters = sorted(n.name for n in client.get_primaries())
        first = masters.index(client.nodes_manager.get_node_from_slot(slot).name)
        owners = [masters[(first + i) % len(masters)] for i in range(7)]  # round twice
        versions = list(range(1, 4001))
        random.shuffle(versions)
        writes = asyncio.gather(*(tier.record_unlock("h1", "p1", *_state(v)) for v in versions))
        for frm, to in zip(owners, owners[1:], strict=False):
            await asyncio.sleep(0.03)
            await _move_slot(client, slot, frm, to)
        await writes  # record_unlock never raises: an escaped error fails here
        errors = metrics.registry.get_sample_value("score_hot_tier_errors_total", {"op": "write"})
        assert not errors, f"{errors} writes failed while the slot moved"
        assert await tier.score("h1", "p1") == _state(4000)[0]
        assert client.nodes_manager.get_node_from_slot(slot).name == owners[-1]  # followed
    finally:
        await client.aclose()
        cluster.stop()


async def test_a_cluster_restarting_under_load_costs_misses_never_errors(tmp_path):
    """Every master stopped and started again (empty, same ports) while writers
    and readers run. redis-py closes connections in use when a topology refresh
    fails; sends on them raised AttributeError/RuntimeError, and a refresh no
    node answered raised RedisClusterException: none a RedisError, so they
    escaped the hot tier (its calls never raise). rediskit makes them
    ConnectionErrors: misses, then the hot tier works again."""
    cluster = RedisCluster(REPO / "services" / "score" / "redis.conf", tmp_path / "cluster")
    cluster.start()
    client = rediskit.connect(cluster.url)
    tier = HotTier(client, Metrics("score-test"), timeout_s=2.0, breaker_s=0.2)
    stop = asyncio.Event()
    calls = 0

    async def player(name: str) -> None:
        nonlocal calls
        version = 0
        while not stop.is_set():
            version += 1
            await tier.record_unlock("h1", name, *_state(version))  # never raises
            await tier.score("h1", name)
            calls += 1
            await asyncio.sleep(0.002)

    try:
        await rediskit.wait_for(client, 5.0)
        players = [asyncio.ensure_future(player(f"p{i}")) for i in range(60)]
        await asyncio.sleep(0.5)
        for node in cluster.nodes:
            await asyncio.to_thread(node.stop)
        await asyncio.sleep(0.5)
        for node in cluster.nodes:
            await asyncio.to_thread(node.start)
        await asyncio.to_thread(cluster.wait_ok)
        await asyncio.sleep(1.5)
        stop.set()
        await asyncio.gather(*players)  # an escaped error fails the test here
        assert calls > 0
        await tier.record_unlock("h1", "after", *_state(1))
        assert await tier.score("h1", "after") == _state(1)[0]
    finally:
        stop.set()
        await client.aclose()
        cluster.stop()
