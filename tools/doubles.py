"""Servicer doubles on real gRPC servers, for the tests and the benchmarks
that run a service in process without its peers: `serve` (any servicer on a
free loopback port), geo's catalog (`FakeCatalog`: GetHunt only; score and the
leaderboard ask it whether a hunt exists) and a leaderboard that records
SubmitScores (`FakeLeaderboard`, served by `LeaderboardDouble`: score's
outbox relay delivers to it)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager
from typing import TypeVar

import grpc

from treasure.geo.v1 import geo_pb2, geo_pb2_grpc
from treasure.leaderboard.v1 import leaderboard_pb2, leaderboard_pb2_grpc

_Servicer = TypeVar("_Servicer")


@contextlib.asynccontextmanager
async def serve(
    add_to_server: Callable[[_Servicer, grpc.aio.Server], None], servicer: _Servicer
) -> AsyncIterator[str]:
    """`servicer` (registered with its generated `add_*_to_server`) on a free
    port until the block exits; yields its address."""
    server = grpc.aio.server()
    add_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


class FakeCatalog(geo_pb2_grpc.GeoServiceServicer):
    """GetHunt finds the hunts in `hunts` (every hunt when None); `asked`
    counts the calls, so a test can see the caller's cache at work. ListHunts
    pages through `listed`."""

    def __init__(
        self, hunts: Iterable[str] | None = None, listed: Iterable[geo_pb2.Hunt] = ()
    ) -> None:
        self.hunts = None if hunts is None else set(hunts)
        self.asked = 0
        #: What ListHunts answers, two to a page.
        self.listed = list(listed)

    async def ListHunts(self, request, context):
        start = int(request.page_token or 0)
        page = self.listed[start : start + 2]
        more = start + 2 < len(self.listed)
        return geo_pb2.ListHuntsResponse(hunts=page, next_page_token=str(start + 2) if more else "")

    async def GetHunt(self, request, context):
        self.asked += 1
        if self.hunts is not None and request.hunt_id not in self.hunts:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"hunt {request.hunt_id} not found")
        return geo_pb2.GetHuntResponse(hunt=geo_pb2.Hunt(hunt_id=request.hunt_id))


def serve_catalog(catalog: FakeCatalog | None = None) -> AbstractAsyncContextManager[str]:
    """The double (every hunt exists unless given one) on a free port; yields its address."""
    # A double answers only what its callers ask (the generated base is abstract).
    catalog = catalog or FakeCatalog()  # type: ignore[abstract]
    return serve(geo_pb2_grpc.add_GeoServiceServicer_to_server, catalog)


class FakeLeaderboard(leaderboard_pb2_grpc.LeaderboardServiceServicer):
    """Records SubmitScores; answers `fail_with` instead while it is set.
    Keeps the newest version per (hunt, player), as the real board does."""

    def __init__(self) -> None:
        self.fail_with: grpc.StatusCode | None = None
        self.batches: list[list[leaderboard_pb2.ScoreUpdate]] = []
        self.refused = 0
        self.tokens: set[str] = set()
        self.board: dict[tuple[str, str], leaderboard_pb2.ScoreUpdate] = {}
        self._changed = asyncio.Condition()

    async def SubmitScores(self, request, context):
        self.tokens.update(v for k, v in context.invocation_metadata() if k == "authorization")
        if self.fail_with is not None:
            async with self._changed:
                self.refused += 1
                self._changed.notify_all()
            await context.abort(self.fail_with, "the test double says no")
        applied = stale = 0
        for update in request.updates:
            key = (update.hunt_id, update.player_id)
            held = self.board.get(key)
            if held is None or update.version > held.version:
                self.board[key] = update
                applied += 1
            else:
                stale += 1
        async with self._changed:
            self.batches.append(list(request.updates))
            self._changed.notify_all()
        return leaderboard_pb2.SubmitScoresResponse(applied=applied, stale=stale)

    async def wait_until(
        self, done: Callable[[], bool], timeout_s: float = 30.0, what: str = "the condition"
    ) -> None:
        """Returns once `done()` holds (checked after each call); fails naming
        `what` and what the double saw after `timeout_s` (a hang guard)."""
        try:
            async with asyncio.timeout(timeout_s), self._changed:
                await self._changed.wait_for(done)
        except TimeoutError:
            raise AssertionError(
                f"{what} did not happen within {timeout_s:g}s: the leaderboard double got "
                f"{len(self.batches)} batches ({sum(map(len, self.batches))} updates), "
                f"refused {self.refused} calls, holds {len(self.board)} players"
            ) from None


class LeaderboardDouble:
    """A real grpc.aio server for FakeLeaderboard that can stop and start
    again on the same port."""

    def __init__(self) -> None:
        self.servicer = FakeLeaderboard()  # type: ignore[abstract]  # SubmitScores only
        self.port = 0
        self._server: grpc.aio.Server | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> LeaderboardDouble:
        server = grpc.aio.server()
        leaderboard_pb2_grpc.add_LeaderboardServiceServicer_to_server(self.servicer, server)
        self.port = server.add_insecure_port(f"127.0.0.1:{self.port}")
        await server.start()
        self._server = server
        return self

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(0)
            self._server = None
