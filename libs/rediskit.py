"""Redis clients from a URL, and the contract check every service runs at start.

`redis://host:port/db` (or `rediss://`) gives a standalone client;
`redis+cluster://host:port` (or `rediss+cluster://`) gives a Redis Cluster
client that discovers the other nodes from that one.

A cluster client fails the way a standalone one does: with a RedisError
(ConnectionError when Redis cannot be reached), so a service's `except
RedisError` covers both. redis-py 8.1's asyncio RedisCluster needs three
things for that, each found under load on a real cluster:

- it patches its slot table from each MOVED reply and never tears its
  connections down because of one (`reinitialize_steps=0`). redis-py's default
  (5) makes every fifth MOVED call `aclose()`, which disconnects the
  connections other coroutines are using at that moment. Bursts of MOVED come
  with every resharding or failover, and with the first commands of a client
  that has not discovered the cluster yet (redis-py routes those to an
  arbitrary node). Connection errors still refresh the whole topology.
- a send on a connection that another coroutine closed meanwhile fails with
  ConnectionError (`_SendGuard`). redis-py still closes connections in use
  when a topology refresh fails (the cluster restarting) and closes idle ones
  after a connection error while others can still take them; the send then
  met a `None` writer ("'NoneType' object has no attribute 'writelines'") or,
  under uvloop, a closed transport (RuntimeError). Neither is a RedisError:
  they escaped every handler and redis-py's own retry.
- a topology refresh that no node answers raises ClusterUnavailableError (a
  ConnectionError), not RedisClusterException, which is no RedisError.

The contract (DESIGN.md's Redis table) is what a service needs from its Redis:
an eviction policy that fits its data, `maxmemory` set, and no persistence
where it should have none. A service refuses to start on a Redis that breaks
it, with a message naming the setting that points at that Redis.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.connection import Connection, SSLConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError

AnyRedis = Redis | RedisCluster

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


class ContractError(Exception):
    """The Redis a service was pointed at breaks the service's contract."""


@dataclass(frozen=True)
class RedisContract:
    #: The required `maxmemory-policy`.
    policy: str
    #: Whether RDB snapshots or AOF may be on. Caches here keep nothing on disk.
    persistence: bool = False


class ClusterUnavailableError(RedisConnectionError):
    """No node of the cluster could give its topology (all unreachable, or the
    cluster not whole yet)."""


class _SendGuard:
    """A send on a connection closed under it fails with ConnectionError (see
    the module doc), as a send on a socket the peer closed does."""

    host: str
    port: int
    _writer: Any

    async def _send_packed_command(self, command: Iterable[bytes]) -> None:
        writer = self._writer
        if writer is None:
            raise RedisConnectionError(f"{self.host}:{self.port}: connection closed while in use")
        try:
            writer.writelines(command)
        except RuntimeError as exc:  # uvloop: "unable to perform operation on <TCPTransport ...>"
            raise RedisConnectionError(f"{self.host}:{self.port}: {exc}") from exc
        await writer.drain()


class _GuardedConnection(_SendGuard, Connection):
    pass


class _GuardedSSLConnection(_SendGuard, SSLConnection):
    pass


class _Cluster(RedisCluster):
    """redis-py's RedisCluster with guarded connections and typed discovery errors."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # RedisCluster takes no connection class; nodes are made from these kwargs.
        ssl = issubclass(self.connection_kwargs["connection_class"], SSLConnection)
        guarded = _GuardedSSLConnection if ssl else _GuardedConnection
        self.connection_kwargs["connection_class"] = guarded  # nodes discovered later
        for node in self.startup_nodes:  # made already
            node.connection_class = guarded

    async def initialize(self, *args: Any, **kwargs: Any) -> RedisCluster:
        try:
            return await super().initialize(*args, **kwargs)
        except RedisClusterException as exc:
            raise ClusterUnavailableError(str(exc)) from exc


def is_cluster_url(url: str) -> bool:
    return url.split("://", 1)[0] in CLUSTER_SCHEMES


def connect(url: str, *, max_connections: int = 64, socket_timeout: float = 1.0) -> AnyRedis:
    """A client for `url` (not yet connected; the first command connects)."""
    scheme, sep, rest = url.partition("://")
    common = dict(
        decode_responses=True,
        socket_timeout=socket_timeout,
        socket_connect_timeout=socket_timeout,
    )
    if scheme in CLUSTER_SCHEMES:
        # max_connections is per master here (each has its own pool).
        return _Cluster.from_url(
            f"{CLUSTER_SCHEMES[scheme]}{sep}{rest}",
            max_connections=max_connections,
            reinitialize_steps=0,
            **common,
        )
    return Redis.from_url(url, max_connections=max_connections, health_check_interval=30, **common)


async def wait_for(client: AnyRedis, timeout_s: float) -> None:
    """Returns once `client` answers PING; raises the last error after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    delay = 0.1
    while True:
        try:
            await client.ping()
            return
        except (RedisError, OSError) as exc:
            if time.monotonic() + delay > deadline:
                raise ContractError(f"redis did not answer within {timeout_s:g}s: {exc}") from exc
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


async def _config(client: AnyRedis, node: ClusterNode | None) -> dict[str, str]:
    kwargs = {"target_nodes": node} if node is not None else {}
    result: dict[str, str] = {}
    for pattern in ("maxmemory", "maxmemory-policy", "save", "appendonly"):
        reply = await client.config_get(pattern, **kwargs)
        result.update(reply)
    return result


async def check_contract(client: AnyRedis, contract: RedisContract, setting: str) -> None:
    """Raises ContractError, naming `setting`, when any master breaks the contract."""
    if isinstance(client, RedisCluster):
        await client.initialize()
        targets: list[ClusterNode | None] = list(client.get_primaries())
    else:
        targets = [None]
    problems: list[str] = []
    for node in targets:
        where = f" on {node.name}" if node is not None else ""
        config = await _config(client, node)
        if int(config.get("maxmemory", "0")) <= 0:
            problems.append(f"maxmemory is not set{where} (it must be bounded)")
        policy = config.get("maxmemory-policy", "")
        if policy != contract.policy:
            problems.append(f"maxmemory-policy is {policy!r}{where}, must be {contract.policy!r}")
        if not contract.persistence:
            if config.get("save", ""):
                problems.append(
                    f"RDB snapshots are on (save {config['save']!r}){where}, must be off"
                )
            if config.get("appendonly", "no") != "no":
                problems.append(f"AOF is on{where}, must be off")
    if problems:
        raise ContractError(
            f"the Redis at {setting} breaks this service's contract: " + "; ".join(problems)
        )


async def memory(client: AnyRedis) -> tuple[int, int]:
    """(used_memory, maxmemory) summed over every master."""
    info = await client.info("memory")
    if isinstance(client, RedisCluster):
        values = (
            list(info.values()) if info and isinstance(next(iter(info.values())), dict) else [info]
        )
    else:
        values = [info]
    used = sum(int(v.get("used_memory", 0)) for v in values)
    limit = sum(int(v.get("maxmemory", 0)) for v in values)
    return used, limit
