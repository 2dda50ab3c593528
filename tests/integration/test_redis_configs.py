"""Each service's pinned Redis config keeps the contract of docs/ARCHITECTURE.md, on one Redis
and on every master of a Redis Cluster, and each service refuses to start on
a Redis that breaks it."""

from __future__ import annotations

import subprocess
import sys

import pytest
import redis.asyncio as aioredis

from libs import rediskit
from services.geo.cache import CONTRACT as GEO
from services.leaderboard.cache import CONTRACT as LEADERBOARD
from services.scan.cache import CONTRACT as SCAN
from services.score.cache import CONTRACT as SCORE
from tests.support.infra import REPO
from tools.inprocess import service_env
from tools.localinfra import RedisCluster, RedisServer, free_port

# docs/ARCHITECTURE.md, "Redis: one per service": the policy of each.
POLICY = {
    "scan": "allkeys-lru",
    "score": "allkeys-lru",
    "leaderboard": "noeviction",
    "geo": "allkeys-lru",
}
CONTRACTS = {"scan": SCAN, "score": SCORE, "leaderboard": LEADERBOARD, "geo": GEO}
DEFAULT_PORTS = {"scan": 6381, "score": 6382, "leaderboard": 6383, "geo": 6384}


@pytest.mark.parametrize("service", sorted(POLICY))
async def test_config_file_keeps_the_contract(service, tmp_path):
    config_file = REPO / "services" / service / "redis.conf"
    assert f"port {DEFAULT_PORTS[service]}" in config_file.read_text()
    server = RedisServer(config_file, free_port(), tmp_path).start()
    client = aioredis.Redis.from_url(server.url, decode_responses=True)
    try:
        config = await client.config_get("*")
        assert config["maxmemory-policy"] == POLICY[service] == CONTRACTS[service].policy
        assert int(config["maxmemory"]) > 0
        assert config["save"] == ""
        assert config["appendonly"] == "no"
        assert not CONTRACTS[service].persistence
    finally:
        await client.aclose()
        server.stop()


@pytest.mark.parametrize("service", sorted(POLICY))
async def test_the_suites_redis_keeps_the_contract_on_every_master(service, redis_urls):
    """What the suite runs on (one Redis, or a cluster with TEST_REDIS=cluster)
    passes the check each service runs at start-up, master by master."""
    client = rediskit.connect(redis_urls[service])
    try:
        await rediskit.check_contract(client, CONTRACTS[service], f"{service.upper()}_REDIS_URL")
    finally:
        await client.aclose()


async def test_the_contract_check_names_the_one_master_that_breaks_it(tmp_path):
    cluster = RedisCluster(REPO / "services" / "geo" / "redis.conf", tmp_path / "cluster").start()
    client = rediskit.connect(cluster.url)
    try:
        await rediskit.check_contract(client, GEO, "GEO_REDIS_URL")  # all three keep it
        broken = cluster.nodes[-1]
        node = aioredis.Redis(host="127.0.0.1", port=broken.port, decode_responses=True)
        try:
            await node.config_set("maxmemory-policy", "noeviction")
        finally:
            await node.aclose()
        with pytest.raises(rediskit.ContractError) as raised:
            await rediskit.check_contract(client, GEO, "GEO_REDIS_URL")
        message = str(raised.value)
        assert "GEO_REDIS_URL" in message
        assert f"maxmemory-policy is 'noeviction' on 127.0.0.1:{broken.port}" in message
        assert all(str(n.port) not in message for n in cluster.nodes[:-1])
    finally:
        await client.aclose()
        cluster.stop()


def test_service_refuses_a_redis_with_the_wrong_policy(tmp_path, pg_dsn):
    server = RedisServer(
        REPO / "services" / "geo" / "redis.conf",
        free_port(),
        tmp_path,
        extra_args=("--maxmemory-policy", "noeviction"),
    ).start()
    try:
        env = service_env("GEO", GEO_PG_DSN=pg_dsn, GEO_REDIS_URL=server.url)
        done = subprocess.run(
            [sys.executable, "-m", "services.geo"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        server.stop()
    assert done.returncode == 1
    assert "GEO_REDIS_URL" in done.stderr
    assert "maxmemory-policy is 'noeviction'" in done.stderr and "'allkeys-lru'" in done.stderr


def test_service_refuses_a_redis_without_maxmemory_or_with_persistence(tmp_path, pg_dsn):
    server = RedisServer(
        REPO / "services" / "geo" / "redis.conf",
        free_port(),
        tmp_path,
        extra_args=("--maxmemory", "0", "--appendonly", "yes"),
    ).start()
    try:
        env = service_env("GEO", GEO_PG_DSN=pg_dsn, GEO_REDIS_URL=server.url)
        done = subprocess.run(
            [sys.executable, "-m", "services.geo"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        server.stop()
    assert done.returncode == 1
    assert "maxmemory is not set" in done.stderr and "AOF is on" in done.stderr


def test_missing_settings_exit_2_naming_them():
    done = subprocess.run(
        [sys.executable, "-m", "services.scan"],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "SCAN_PG_DSN is required" in done.stderr and "SCAN_REDIS_URL is required" in done.stderr
