"""Redis clients from a URL, the contract check every service runs at start,
the one runner of Lua scripts (`Script`, `Pipeline`) and the one guard of
Redis calls (`RedisGuard`).

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

The contract (the Redis table of docs/ARCHITECTURE.md) is what a service needs from its Redis:
an eviction policy that fits its data, `maxmemory` set, and no persistence
where it should have none. A service refuses to start on a Redis that breaks
it, with a message naming the setting that points at that Redis.

Lua scripts live in `.lua` files beside the `cache.py` that runs them, each a
`Script` (see its doc: preludes, `{{NAME}}` constants, NOSCRIPT, pipelines,
Redis Cluster). Every call to a service's Redis goes through its `RedisGuard`:
a time budget, which errors mean "Redis did not answer", an optional breaker
and bound on calls in flight, and what a failure becomes (raise one error
class, by default `CacheUnavailable`, or return a miss / fail-open default).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast, overload

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.connection import Connection, SSLConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisClusterException, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from libs import errors

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


#: Connections in each client's pool (per master on a Redis Cluster). redis-py's
#: asyncio pools fail a command that finds them all in use ("Too many
#: connections") rather than wait for one.
POOL_SIZE = 64
#: So a RedisGuard lets this many calls run at once by default, and the rest
#: wait for a slot within their budget: a burst (200 WatchTop streams opening
#: at once) waits a moment instead of failing.
GUARD_IN_FLIGHT = POOL_SIZE - 8


def connect(url: str, *, max_connections: int = POOL_SIZE, socket_timeout: float = 1.0) -> AnyRedis:
    """A client for `url` (not yet connected; the first command connects)."""
    scheme, sep, rest = url.partition("://")
    common: dict[str, Any] = dict(
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
        result.update(cast("dict[str, str]", reply))  # decode_responses: str
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


# -- Lua scripts ----------------------------------------------------------------

#: `{{NAME}}` in a script's text: a constant given when the script is loaded.
_PLACEHOLDER = re.compile(r"\{\{([A-Z][A-Z0-9_]*)\}\}")


class Script:
    """A Lua script read from a `.lua` file, run by EVALSHA.

    - `prelude`: a `.lua` file of functions that several scripts share. It is
      put right after the script's first line when that is a shebang (`#!lua
      flags=no-writes`, `#!lua flags=allow-oom`: Redis reads the flags only
      from the first line), else before the script.
    - `constants`: each `{{NAME}}` in the script or its prelude becomes the
      integer given here, so a value the Python code knows too is defined
      once. A placeholder without a value, or a value no placeholder uses, is
      an error at load.

    `run` sends EVALSHA; on NOSCRIPT (a restarted Redis, SCRIPT FLUSH, a
    failed-over master) it sends EVAL with the body once, which Redis caches.
    EVAL goes where the EVALSHA went: by the keys, so on a Redis Cluster to
    the master of their slot (following MOVED), which is the one node that
    needs the script. redis-py's `register_script` loads it with SCRIPT LOAD
    instead, which a cluster client sends to every master: a master down
    elsewhere then fails a call whose own master is fine, and it costs a round
    trip more. Scripts and their replies are otherwise redis-py's own
    (`evalsha`, `eval`, `NoScriptError`).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        prelude: str | Path | None = None,
        constants: Mapping[str, int] | None = None,
    ) -> None:
        self.path = Path(path)
        self.prelude = Path(prelude) if prelude is not None else None
        text = self.path.read_text(encoding="utf-8")
        if self.prelude is not None:
            shared = self.prelude.read_text(encoding="utf-8")
            if text.startswith("#!"):
                first, _, rest = text.partition("\n")
                text = f"{first}\n{shared}{rest}"
            else:
                text = shared + text
        self.source = _render(text, constants or {}, self.name)
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()

    @property
    def name(self) -> str:
        return self.path.name

    def __repr__(self) -> str:
        return f"Script({self.name!r}, sha={self.sha[:12]})"

    async def load(self, client: AnyRedis) -> None:
        """SCRIPT LOAD (on a cluster: on every master), e.g. at start-up so the
        first calls do not meet NOSCRIPT."""
        await client.script_load(self.source)

    async def run(
        self, client: AnyRedis, keys: Sequence[Any] = (), args: Sequence[Any] = ()
    ) -> Any:
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await client.eval(self.source, len(keys), *keys, *args)

    async def run_each(
        self, client: AnyRedis, calls: Sequence[tuple[Sequence[Any], Sequence[Any]]]
    ) -> list[Any]:
        """The script once per (keys, args), in one round trip: one pipeline on
        a standalone Redis; on a cluster, where redis-py refuses EVALSHA in
        pipelines, concurrent calls, each to the master of its slot. Raises
        the first error reply (after NOSCRIPTs were retried)."""
        if len(calls) == 1:
            keys, args = calls[0]
            return [await self.run(client, keys, args)]
        if isinstance(client, RedisCluster):
            return list(await asyncio.gather(*(self.run(client, k, a) for k, a in calls)))
        pipe = Pipeline(client)
        for keys, args in calls:
            pipe.script(self, keys, args)
        return await pipe.execute()


def _render(text: str, constants: Mapping[str, int], name: str) -> str:
    for key, value in constants.items():
        if type(value) is not int:
            raise TypeError(f"{name}: constant {key} must be an int, not {value!r}")
    used: set[str] = set()

    def value_of(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in constants:
            raise ValueError(f"{name}: no value given for {match.group(0)}")
        used.add(key)
        return str(constants[key])

    rendered = _PLACEHOLDER.sub(value_of, text)
    unused = sorted(set(constants) - used)
    if unused:
        raise ValueError(f"{name}: constants {unused} are not used")
    return rendered


class Pipeline:
    """Commands and scripts in one round trip (one per master on a cluster),
    not as a transaction. Queue plain commands on `commands` (redis-py's
    pipeline), scripts with `script()`.

    A script goes as EVALSHA; on a cluster, where redis-py refuses EVALSHA in
    pipelines, as EVAL with its body. After a NOSCRIPT reply only the scripts
    that met it are sent again (EVAL, one more round trip), so nothing runs
    twice. `execute` raises the first error reply."""

    def __init__(self, client: AnyRedis) -> None:
        self._client = client
        self._cluster = isinstance(client, RedisCluster)
        self.commands: Any = client.pipeline(transaction=False)
        self._scripts: dict[int, tuple[Script, Sequence[Any], Sequence[Any]]] = {}

    def script(self, script: Script, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> None:
        self._scripts[len(self.commands)] = (script, keys, args)
        if self._cluster:
            self.commands.eval(script.source, len(keys), *keys, *args)
        else:
            self.commands.evalsha(script.sha, len(keys), *keys, *args)

    async def execute(self) -> list[Any]:
        replies = await self.commands.execute(raise_on_error=False)
        missing = [
            i for i, r in enumerate(replies) if isinstance(r, NoScriptError) and i in self._scripts
        ]
        if missing:
            again = self._client.pipeline(transaction=False)
            for i in missing:
                script, keys, args = self._scripts[i]
                again.eval(script.source, len(keys), *keys, *args)
            for i, reply in zip(missing, await again.execute(raise_on_error=False), strict=True):
                replies[i] = reply
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies


# -- the guard of every Redis call --------------------------------------------------

_T = TypeVar("_T")
_D = TypeVar("_D")


class CacheUnavailable(errors.Unavailable):
    """A service's Redis did not answer in time, or answered with an error
    (what a RedisGuard raises unless given another error)."""

    def __init__(
        self, message: str, *, retry_after_s: float = 1.0, reason: str = "CACHE_UNAVAILABLE"
    ) -> None:
        super().__init__(message, retry_after_s=retry_after_s, reason=reason)


class Breaker:
    """Skips a Redis for `open_s` after `failures` consecutive failed calls,
    so a dead Redis costs nothing per call. Timeouts do not count: a missed
    deadline is as likely a busy event loop as a slow Redis, and the deadline
    already bounds what the call cost. `open_s` 0: never opens."""

    def __init__(self, failures: int, open_s: float) -> None:
        self._threshold = failures
        self._open_s = open_s
        self._failures = 0
        self._open_until = 0.0

    def is_open(self) -> bool:
        return bool(self._open_until) and time.monotonic() < self._open_until

    @property
    def tripped(self) -> bool:
        """Whether it opened since the last call that succeeded (still open or not)."""
        return bool(self._open_until)

    def failed(self, exc: BaseException) -> bool:
        """Counts a failure; whether this one opened the breaker."""
        if not isinstance(exc, (TimeoutError, RedisTimeoutError)):
            self._failures += 1
        if self._failures >= self._threshold and self._open_s > 0:
            self._open_until = time.monotonic() + self._open_s
            self._failures = 0
            return True
        return False

    def succeeded(self) -> None:
        self._failures = 0
        self._open_until = 0.0


@dataclass(frozen=True, slots=True)
class Failure:
    """A guarded call that got no answer, as the guard's `on_failure` sees it."""

    op: str
    #: What the call raised; None when it was skipped (the breaker is open).
    error: BaseException | None
    #: This failure opened the breaker.
    opened: bool = False


class _Raise:
    """The default policy: a failed call raises."""


_RAISE: Any = _Raise()


class RedisGuard:
    """How one service calls its Redis: `await guard.call(lambda: ..., op=...)`.

    - `timeout_s`: the budget of each call (None: only the client's socket
      timeout); a call may pass its own. It covers waiting for a slot too.
    - `catch`: the errors that mean "Redis did not answer". The guard's own
      deadline (TimeoutError) always is one; anything else propagates.
    - `error`: what a failed call raises, made from the caught error (None
      when the breaker skipped the call); by default `CacheUnavailable`
      naming the guard. It is raised `from` the caught error.
    - `breaker`: skip Redis for a while after consecutive failures (`Breaker`).
    - `max_in_flight`: at most this many calls at once (the others wait,
      within their budget); by default `GUARD_IN_FLIGHT`, below the client's
      pool size, where more would fail rather than wait.
    - `on_failure`: told of every failure and skipped call (count, log).

    Per call, `default` is the failure policy: leave it out to raise (`error`),
    or give the value a failure returns instead (a miss: None; fail open: the
    answer without Redis). A call cancelled while it fails is cancelled, never
    turned into a failure.
    """

    def __init__(
        self,
        name: str,
        *,
        timeout_s: float | None = None,
        catch: tuple[type[BaseException], ...] = (RedisError, OSError),
        error: Callable[[BaseException | None], Exception] | None = None,
        breaker: Breaker | None = None,
        max_in_flight: int | None = GUARD_IN_FLIGHT,
        on_failure: Callable[[Failure], None] | None = None,
    ) -> None:
        self.name = name
        self.breaker = breaker
        self._timeout_s = timeout_s
        self._catch: tuple[type[BaseException], ...] = (*catch, TimeoutError)
        self._error = error or self._unavailable
        self._slots = asyncio.Semaphore(max_in_flight) if max_in_flight else None
        self._on_failure = on_failure

    def _unavailable(self, cause: BaseException | None) -> Exception:
        if cause is None:
            return CacheUnavailable(f"{self.name}: skipped while its breaker is open")
        return CacheUnavailable(f"{self.name}: {cause}")

    @overload
    async def call(
        self, call: Callable[[], Awaitable[_T]], *, op: str = ..., timeout_s: float | None = ...
    ) -> _T: ...

    @overload
    async def call(
        self,
        call: Callable[[], Awaitable[_T]],
        *,
        op: str = ...,
        timeout_s: float | None = ...,
        default: _D,
    ) -> _T | _D: ...

    async def call(
        self,
        call: Callable[[], Awaitable[Any]],
        *,
        op: str = "call",
        timeout_s: float | None = None,
        default: Any = _RAISE,
    ) -> Any:
        """`call()`'s result; on a failure, raises or returns `default`
        (see the class doc). `timeout_s`: this call's budget instead of the
        guard's."""
        breaker = self.breaker
        if breaker is not None and breaker.is_open():
            self._report(Failure(op, None))
            if default is _RAISE:
                raise self._error(None)
            return default
        budget = self._timeout_s if timeout_s is None else timeout_s
        try:
            slot = self._slots if self._slots is not None else contextlib.nullcontext()
            async with asyncio.timeout(budget), slot:
                result = await call()
        except self._catch as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise asyncio.CancelledError from exc  # a cancel that raced the failure
            opened = breaker.failed(exc) if breaker is not None else False
            self._report(Failure(op, exc, opened))
            if default is _RAISE:
                raise self._error(exc) from exc
            return default
        if breaker is not None:
            breaker.succeeded()
        return result

    def _report(self, failure: Failure) -> None:
        if self._on_failure is not None:
            self._on_failure(failure)
