"""libs.rediskit's script runner on each service's real Redis (a 3-master
Redis Cluster each with TEST_REDIS=cluster): every `.lua` file of every
service loads; after SCRIPT FLUSH (what a restarted or failed-over Redis
looks like) single calls, per-hunt batches and mixed pipelines answer as
before and run each script exactly once; and each service's cache works
straight after a flush."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from redis.asyncio import RedisCluster
from redis.exceptions import ResponseError

from libs import rediskit
from libs.metrics import Metrics
from libs.rediskit import Pipeline, Script
from services.geo.cache import GeoCache
from services.geo.model import Sighting
from services.leaderboard import keys as lb_keys
from services.leaderboard.cache import BoardStore
from services.leaderboard.model import Update
from services.scan.cache import ScanCache
from services.scan.model import ScanInput
from services.score.cache import HotTier
from services.score.model import Score, UnlockedCheckpoint
from tests.support.redis_scripts import CACHE_MODULES, scripts_of


async def cached_where(client, key: str, script: Script) -> bool:
    """Whether the node that owns `key` has the script cached."""
    if isinstance(client, RedisCluster):
        node = client.get_node_from_key(key)
        reply = await client.execute_command("SCRIPT EXISTS", script.sha, target_nodes=node)
        return [bool(x) for x in reply] == [True]
    return (await client.script_exists(script.sha)) == [True]


@pytest.fixture
async def clients(redis_urls):
    opened = {service: rediskit.connect(url) for service, url in redis_urls.items()}
    yield opened
    for client in opened.values():
        await client.aclose()


@pytest.fixture
def counting(tmp_path: Path) -> Script:
    """A script that counts its runs per key, with a prelude and a constant
    (templated like the leaderboard's), after its shebang."""
    (tmp_path / "prelude.lua").write_text("local STEP = {{STEP}}\n")
    (tmp_path / "count.lua").write_text(
        "#!lua\nreturn redis.call('INCRBY', KEYS[1], STEP) .. ':' .. (ARGV[1] or '')\n"
    )
    return Script(tmp_path / "count.lua", prelude=tmp_path / "prelude.lua", constants={"STEP": 1})


@pytest.fixture
def read_only(tmp_path: Path) -> Script:
    (tmp_path / "ro.lua").write_text(
        "#!lua flags=no-writes\nreturn redis.call('SET', KEYS[1], 1)\n"
    )
    return Script(tmp_path / "ro.lua")


async def test_every_services_scripts_load_on_its_redis(clients):
    for service, module in CACHE_MODULES.items():
        client = clients[service]
        scripts = scripts_of(module)
        assert scripts, service
        await client.script_flush()
        for script in scripts:
            await script.load(client)  # compiles it: a Lua error fails here
        assert await client.script_exists(*[s.sha for s in scripts]) == [True] * len(scripts)


async def test_a_flushed_script_runs_again_once(clients, counting, read_only):
    client = clients["leaderboard"]
    await client.script_flush()
    assert not await cached_where(client, "t:{a}", counting)
    assert await counting.run(client, ["t:{a}"], ["x"]) == "1:x"  # NOSCRIPT, then EVAL
    assert await cached_where(client, "t:{a}", counting)  # cached where it ran
    assert await counting.run(client, ["t:{a}"]) == "2:"
    # the shebang's flags still apply after the prelude went in
    with pytest.raises(ResponseError, match="[Ww]rite commands are not allowed"):
        await read_only.run(client, ["t:{a}"])


async def test_batches_and_pipelines_survive_a_flush_and_run_nothing_twice(clients, counting):
    client = clients["leaderboard"]
    hunts = [f"t:{{h{i}}}" for i in range(8)]
    if isinstance(client, RedisCluster):
        assert len({client.keyslot(k) for k in hunts}) > 1
    await client.script_flush()
    # one script per key, one round trip (a cluster: concurrent calls)
    assert await counting.run_each(client, [([k], [k]) for k in hunts]) == [f"1:{k}" for k in hunts]
    assert await counting.run_each(client, [([hunts[0]], [])]) == ["2:"]
    # a pipeline mixing commands and scripts, some of them missing
    await client.script_flush()
    other = Script(counting.path, prelude=counting.prelude, constants={"STEP": 10})
    await other.load(client)  # loaded, while `counting` is not
    pipe = Pipeline(client)
    pipe.commands.set("t:{plain}", "v")
    pipe.script(counting, [hunts[1]], ["p"])
    pipe.script(other, [hunts[2]], ["q"])
    pipe.commands.get("t:{plain}")
    pipe.script(counting, [hunts[1]], ["r"])
    assert await pipe.execute() == [True, "2:p", "11:q", "v", "3:r"]
    assert [int(await client.get(k)) for k in hunts[:3]] == [2, 3, 11]
    assert await cached_where(client, hunts[1], counting)  # the next EVALSHA finds it
    # an error reply is raised (after the others ran)
    pipe = Pipeline(client)
    pipe.commands.set("t:{plain}", "w")
    pipe.commands.incr("t:{plain}")
    with pytest.raises(ResponseError):
        await pipe.execute()
    assert await client.get("t:{plain}") == "w"


async def test_each_services_cache_works_right_after_a_flush(clients):
    now_ms = time.time_ns() // 1_000_000
    now = datetime.fromtimestamp(now_ms // 1000, UTC)
    for client in clients.values():
        await client.script_flush()
    # scan: the admission script
    scan = ScanCache(
        clients["scan"], rate_limit=3, rate_window_s=10, pending_ttl_s=5, answer_ttl_s=60
    )
    copy = ScanInput("p1", "h1", "t1", 38.7, -9.1, 5.0, now, "c1")
    first = await scan.admit(copy)
    assert not first.seen and first.retry_after_ms is None
    assert (await scan.admit(copy)).seen
    # score: write-through and fill (the hot tier never raises: check what it wrote)
    metrics = Metrics("scripts-test")
    tier = HotTier(clients["score"], metrics, timeout_s=5.0)
    score = Score(total_points=10, checkpoints_found=1, reached_at=now, version=1)
    cp = UnlockedCheckpoint("cp1", 10, True, now, "s1")
    await tier.record_unlock("h1", "p1", score, cp)
    assert await tier.score("h1", "p1") == score
    await clients["score"].script_flush()
    await tier.fill_score("h1", "p2", score)
    assert await tier.score("h1", "p2") == score
    assert metrics.registry.get_sample_value("score_hot_tier_errors_total", {"op": "write"}) is None
    # geo: scripts in a pipeline (check-in) and alone (nearby players)
    geo = GeoCache(clients["geo"], catalog_ttl_s=300, negative_ttl_s=30, live_bucket_s=20)
    sighting = Sighting("h1", "p1", 38.7, -9.1, 5.0, now_ms - 1000)
    assert await geo.check_in("t1", "h1", sighting, now_ms) == (None, None)
    assert await geo.location("p1") == sighting
    await clients["geo"].script_flush()
    seen = await geo.nearby_players("h1", 38.7, -9.1, 100, 10, now_ms)
    assert [p.player_id for p in seen] == ["p1"]
    await geo.load_scripts()
    # leaderboard: the rebuild scripts, then a submit across hunts (one round trip)
    store = BoardStore(clients["leaderboard"])
    hunts = ["h1", "h2", "h3"]
    for hunt in hunts:
        assert await store.begin_build(hunt, "b1", lb_keys.epoch_for(now_ms), 30_000)
        await store.finish_build(hunt, "b1", now_ms)
    await clients["leaderboard"].script_flush()
    counts = await store.submit({h: [Update("p1", 5, now_ms, 1)] for h in hunts})
    assert {h: (c.applied, c.stale) for h, c in counts.items() if c} == {h: (1, 0) for h in hunts}
    await clients["leaderboard"].script_flush()
    page = await store.top("h2", 10, None)
    assert page is not None and [(e.player_id, e.total) for e in page.entries] == [("p1", 5)]
    assert (await store.state("h3")).exists
