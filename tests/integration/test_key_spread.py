"""The key schema spreads one hunt's load over a Redis Cluster (docs/ARCHITECTURE.md,
"Redis": hash tags by the entity written). 10,000 players of one hunt: every
per-player key of every service, built by the services' own `keys` modules and
written for real, lands on all three masters, none holding more than 40%.
The per-hunt keys (leaderboard board, geo sets) are the known hot keys: each
hunt's sit in one slot, so one master.

This test always runs on a real 3-master cluster: the suite's clusters with
TEST_REDIS=cluster, else one it starts for itself.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
from redis.asyncio import RedisCluster as ClusterClient

from libs import rediskit
from services.geo import keys as geo_keys
from services.leaderboard import keys as lb_keys
from services.scan import keys as scan_keys
from services.score import keys as score_keys
from tests.support.infra import REPO, RUN_DIR, SERVICES, cluster_mode, flush
from tools.localinfra import RedisCluster

HUNT = "lisbon-festival"
PLAYERS = [f"player-{i:05d}" for i in range(10_000)]
MAX_SHARE = 0.40

#: Every per-player key of each service, for one player of HUNT.
PER_PLAYER: dict[str, Callable[[str], list[str]]] = {
    "scan": lambda p: [
        scan_keys.idempotency(p, HUNT, "c-91f3"),
        scan_keys.rate(p),
        scan_keys.last_scan(p),
    ],
    "score": lambda p: [score_keys.player_score(HUNT, p), score_keys.player_checkpoints(HUNT, p)],
    "geo": lambda p: [geo_keys.location(p)],
}

#: Every per-hunt key: the hot keys of a hunt (one board, one set of geo sets).
PER_HUNT: dict[str, list[str]] = {
    "leaderboard": [
        lb_keys.board(HUNT),
        lb_keys.players(HUNT),
        lb_keys.meta(HUNT),
        lb_keys.build_lock(HUNT),
        lb_keys.tmp_board(HUNT),
        lb_keys.tmp_players(HUNT),
    ],
    "geo": [
        geo_keys.hunt(HUNT),
        geo_keys.checkpoints(HUNT),
        geo_keys.checkpoint_info(HUNT),
        geo_keys.live(HUNT, 29_481_022),
        geo_keys.live_seen(HUNT, 29_481_022),
        geo_keys.live(HUNT, 29_481_023),
        geo_keys.live_seen(HUNT, 29_481_023),
    ],
}


@pytest.fixture(scope="module")
def own_cluster() -> Iterator[RedisCluster | None]:
    """A 3-master cluster of this module's own, unless the suite runs on clusters."""
    if cluster_mode():
        yield None
        return
    workdir = RUN_DIR / f"spread-{os.getpid()}"
    cluster = RedisCluster(REPO / "services" / "score" / "redis.conf", workdir).start()
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def cluster_urls(own_cluster: RedisCluster | None, request) -> dict[str, str]:
    """Each service's cluster: its own in cluster mode, else the shared one."""
    if own_cluster is None:
        return request.getfixturevalue("redis_urls")
    return dict.fromkeys(SERVICES, own_cluster.url)


async def _per_master(client: ClusterClient) -> dict[str, int]:
    return {
        node.name: int(await client.dbsize(target_nodes=node)) for node in client.get_primaries()
    }


async def _write(client: ClusterClient, keys: list[str]) -> None:
    """SET each key (60 s TTL), 1,000 to a pipeline (redis-py splits it per master)."""
    for start in range(0, len(keys), 1000):
        pipe = client.pipeline(transaction=False)
        for key in keys[start : start + 1000]:
            pipe.set(key, "1", px=60_000)
        await pipe.execute()


@pytest.mark.parametrize("service", sorted(PER_PLAYER))
async def test_per_player_keys_of_one_hunt_spread_over_every_master(service, cluster_urls):
    url = cluster_urls[service]
    await flush(url)
    client = rediskit.connect(url)
    try:
        await rediskit.wait_for(client, 5.0)
        assert isinstance(client, ClusterClient)
        keys = [key for player in PLAYERS for key in PER_PLAYER[service](player)]
        assert len(set(keys)) == len(keys) == len(PLAYERS) * len(PER_PLAYER[service](HUNT))
        await _write(client, keys)
        counts = await _per_master(client)
        # Where the slot table says each key lives is where DBSIZE found it.
        expected = Counter(client.get_node_from_key(key).name for key in keys)
        assert counts == dict(expected) | {n: 0 for n in counts if n not in expected}
        assert sum(counts.values()) == len(keys)
        shares = {node: count / len(keys) for node, count in counts.items()}
        assert len(shares) == 3 and all(share > 0 for share in shares.values()), shares
        assert max(shares.values()) <= MAX_SHARE, shares
    finally:
        await client.aclose()
        await flush(url)


async def test_the_per_hunt_keys_of_a_hunt_are_one_slot_on_one_master(cluster_urls):
    slots = set()
    for service, keys in PER_HUNT.items():
        url = cluster_urls[service]
        await flush(url)
        client = rediskit.connect(url)
        try:
            await rediskit.wait_for(client, 5.0)
            slots |= {client.keyslot(key) for key in keys}
            await _write(client, keys)
            counts = await _per_master(client)
            assert sorted(counts.values()) == [0, 0, len(keys)], (service, counts)
            owner = client.get_node_from_key(keys[0])
            assert counts[owner.name] == len(keys)
        finally:
            await client.aclose()
            await flush(url)
    assert len(slots) == 1, slots  # the same hash tag {hunt_id} in both services
