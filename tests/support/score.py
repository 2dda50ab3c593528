"""Test support for the score service: the service in-process with settings
(and optionally a span exporter) of the test's choosing, a client presenting a
token, and a real gRPC LeaderboardService double for the outbox relay."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import grpc

from libs.auth import bearer_interceptors
from libs.server import Runtime
from libs.telemetry import Telemetry
from services.score.__main__ import running
from services.score.client import ScoreClient
from services.score.config import ScoreConfig
from tests.support.catalog import FakeCatalog, serve_catalog
from tests.support.env import CLIENT_TOKEN, SERVICE_TOKEN, service_env
from treasure.leaderboard.v1 import leaderboard_pb2, leaderboard_pb2_grpc


def score_config(
    pg_dsn: str, redis_url: str, leaderboard_addr: str, **settings: str
) -> ScoreConfig:
    env = service_env(
        "SCORE",
        SCORE_PG_DSN=pg_dsn,
        SCORE_REDIS_URL=redis_url,
        LEADERBOARD_SERVICE_ADDR=leaderboard_addr,
        **settings,
    )
    return ScoreConfig.from_env(env)


@contextlib.asynccontextmanager
async def score_service(
    pg_dsn: str,
    redis_url: str,
    leaderboard_addr: str,
    *,
    telemetry: Telemetry | None = None,
    catalog: FakeCatalog | None = None,
    **settings: str,
) -> AsyncIterator[Runtime]:
    """The score service in this process on a free port, until the block exits.
    Geo's catalog is a double (`catalog`, or one where every hunt exists)
    unless GEO_SERVICE_ADDR is given."""
    async with contextlib.AsyncExitStack() as stack:
        if "GEO_SERVICE_ADDR" not in settings:
            settings["GEO_SERVICE_ADDR"] = await stack.enter_async_context(serve_catalog(catalog))
        config = score_config(pg_dsn, redis_url, leaderboard_addr, **settings)
        async with running(config, telemetry=telemetry) as runtime:
            yield runtime


@contextlib.asynccontextmanager
async def channel_to(port: int, token: str = SERVICE_TOKEN) -> AsyncIterator[grpc.aio.Channel]:
    channel = grpc.aio.insecure_channel(
        f"127.0.0.1:{port}", interceptors=list(bearer_interceptors(token))
    )
    try:
        yield channel
    finally:
        await channel.close()


class Clients:
    """The score client as its callers hold it: Unlock and StreamScores with
    the service token, GetScore and GetProgress with the client token."""

    def __init__(self, service: ScoreClient, public: ScoreClient) -> None:
        self.unlock = service.unlock
        self.stream_scores = service.stream_scores
        self.get_score = public.get_score
        self.get_progress = public.get_progress


@contextlib.asynccontextmanager
async def score_client(port: int) -> AsyncIterator[Clients]:
    async with channel_to(port, SERVICE_TOKEN) as service, channel_to(port, CLIENT_TOKEN) as public:
        yield Clients(ScoreClient(service, timeout_s=10.0), ScoreClient(public, timeout_s=10.0))


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
        self.servicer = FakeLeaderboard()
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
