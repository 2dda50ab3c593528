"""More calls taken from gRPC's core at once than grpc.aio takes by itself.

grpc.aio's server (1.85) keeps one request for a new call outstanding per
registered method: when a call arrives, its main loop wakes through
`asyncio.wait`, starts the call's task, and only then asks core for the next
one, through a new task of its own. Each call taken so costs about five turns
of the event loop, one after the other; while the loop is busy with the calls
already taken, a turn lasts longer, and the rate at which new calls are taken
falls below the rate at which they arrive. They then wait in core's queue of
calls no handler has taken (1,000-3,000 deep): seconds of latency with the
process far from busy (on a stack of its own at about 2x its capacity, scan
used 0.6 of a core while its callers saw a median of 1.1 s, its handlers 42 ms;
docs/ARCHITECTURE.md, "Admission").
Upstream knows the cost (grpc/grpc#43461, "Fix server RPC accept loop
performance regression", open).

`Acceptors` adds, per registered method, `count` loops that each keep one
more request outstanding and start each call it gets the way grpc.aio's own
loop does (`_handle_rpc` under `_schedule_rpc_coro`: the same handler lookup,
cancellation and error handling). So up to `count + 1` calls of a method are
taken per turn. The calls it takes run no server interceptors: it is for
servers built without any, as libs.server builds them (their handlers are
wrapped instead, libs.rpc). It uses grpc.aio's private API of the pinned
version: where that is missing, `Acceptors.start` logs it and the server runs
with gRPC's own loop alone, as before.

Shutdown: the loops are never cancelled while core holds their request (a
call matched to a cancelled request would be lost). `server.stop()` fails
every outstanding request, and each loop ends on that failure; `wait()`
waits for them after the server stopped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

import grpc

log = logging.getLogger(__name__)

try:
    from grpc._cython import cygrpc

    _PRIVATE = all(
        hasattr(obj, name)
        for obj, name in (
            (cygrpc, "_handle_rpc"),
            (cygrpc, "_schedule_rpc_coro"),
            (cygrpc, "_MethodResolver"),
            (cygrpc, "_RequestCallError"),
            (cygrpc.AioServer, "_request_registered_call"),
            (cygrpc.AioServer, "is_running"),
        )
    )
except ImportError:  # pragma: no cover - grpcio always ships cygrpc
    _PRIVATE = False


class Acceptors:
    """`count` extra accept loops for each of `handlers` (full method name ->
    handler, as registered on `server` with `add_registered_method_handlers`)."""

    def __init__(
        self, server: grpc.aio.Server, handlers: Mapping[str, grpc.RpcMethodHandler], count: int
    ) -> None:
        self._server = server
        self._handlers = dict(handlers)
        self._count = count
        self._loops: list[asyncio.Task[None]] = []
        self._calls: set[asyncio.Task[None]] = set()
        self.taken = 0  # calls started by these loops

    @property
    def running(self) -> int:
        return sum(not task.done() for task in self._loops)

    def start(self) -> bool:
        """Starts the loops once `server` has started; False when there are
        none (count 0, no methods, or grpc.aio without the private API)."""
        if self._count <= 0 or not self._handlers:
            return False
        core = getattr(self._server, "_server", None)
        if not _PRIVATE or core is None:
            log.warning("grpc.aio's private accept API is missing: gRPC's own accept loop only")
            return False
        resolver = cygrpc._MethodResolver([], self._handlers)
        loop = asyncio.get_running_loop()
        for method in self._handlers:
            for n in range(self._count):
                self._loops.append(
                    loop.create_task(
                        self._accept(core, resolver, method), name=f"accept {method} #{n + 1}"
                    )
                )
        return True

    async def _accept(self, core, resolver, method: str) -> None:
        loop = asyncio.get_running_loop()
        name = method.encode()
        while True:
            try:
                state = await core._request_registered_call(name)
            except cygrpc._RequestCallError:
                if core.is_running():
                    continue  # core failed this request only: ask again, as grpc.aio does
                return  # the server is stopping: core failed every request
            except Exception as exc:  # a server that stopped before the request was made
                log.debug("accept loop of %s ends: %r", method, exc)
                return
            self.taken += 1
            call = loop.create_task(
                cygrpc._schedule_rpc_coro(
                    cygrpc._handle_rpc(method, resolver, (), state, loop, False),
                    state,
                    loop,
                    method,
                ),
                name="rpc_task",
            )
            self._calls.add(call)
            call.add_done_callback(self._calls.discard)

    async def wait(self, timeout_s: float = 5.0) -> None:
        """After `server.stop()`: waits for the loops to end (each ends when
        core fails its request), cancelling any still there after `timeout_s`."""
        if not self._loops:
            return
        _, pending = await asyncio.wait(self._loops, timeout=timeout_s)
        for task in pending:
            task.cancel()
        if pending:
            log.warning("%d accept loops outlived the server; cancelled", len(pending))
            await asyncio.wait(pending, timeout=1.0)
        self._loops.clear()
