"""Test support for the leaderboard: a real gRPC ScoreService double serving
StreamScores from an in-memory table (slow, gated, failing or down on
demand), and the leaderboard service running in process against it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from libs.auth import bearer_interceptors
from libs.server import Runtime
from services.leaderboard.client import LeaderboardClient
from services.leaderboard.model import ScoreUpdate
from tests.support.env import ADMIN_TOKEN, CLIENT_TOKEN, SERVICE_TOKEN, bearer
from tools.doubles import FakeCatalog, serve, serve_catalog
from tools.inprocess import in_process
from treasure.leaderboard.v1 import leaderboard_pb2 as pb
from treasure.leaderboard.v1 import leaderboard_pb2_grpc
from treasure.score.v1 import score_pb2, score_pb2_grpc


@dataclass(frozen=True)
class Total:
    player_id: str
    total: int
    reached_ms: int
    version: int


@dataclass
class FakeScores(score_pb2_grpc.ScoreServiceServicer):
    """StreamScores from `totals` (hunt -> player -> Total), ordered by player.

    `gate`: when set to an unset Event, the stream stops after its first page
    (setting `paused`) until the gate is set. `fail_after_pages`: the stream
    aborts UNAVAILABLE after that many pages. `down`: every call is UNAVAILABLE.
    """

    totals: dict[str, dict[str, Total]] = field(default_factory=dict)
    page_delay_s: float = 0.0
    gate: asyncio.Event | None = None
    paused: asyncio.Event = field(default_factory=asyncio.Event)
    fail_after_pages: int | None = None
    down: bool = False
    streams: int = 0

    def put(self, hunt_id: str, player_id: str, total: int, reached_ms: int, version: int) -> None:
        self.totals.setdefault(hunt_id, {})[player_id] = Total(
            player_id, total, reached_ms, version
        )

    async def StreamScores(self, request, context):
        if dict(context.invocation_metadata()).get("authorization") != f"Bearer {SERVICE_TOKEN}":
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "the service token is required")
        if self.down:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "score is down")
        self.streams += 1
        rows = sorted(self.totals.get(request.hunt_id, {}).values(), key=lambda t: t.player_id)
        size = request.page_size or 1000
        for page_no, start in enumerate(range(0, len(rows), size)):
            if self.fail_after_pages is not None and page_no >= self.fail_after_pages:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "score failed mid-stream")
            if page_no == 1 and self.gate is not None:
                self.paused.set()
                await self.gate.wait()
            if self.page_delay_s:
                await asyncio.sleep(self.page_delay_s)
            yield score_pb2.StreamScoresResponse(
                totals=[
                    score_pb2.PlayerTotal(
                        player_id=t.player_id,
                        total_points=t.total,
                        reached_at=ms_timestamp(t.reached_ms),
                        version=t.version,
                    )
                    for t in rows[start : start + size]
                ]
            )


_UNIX = datetime(1970, 1, 1, tzinfo=UTC)


def update(
    hunt_id: str, player_id: str, total: int, reached_ms: int, version: int = 1
) -> ScoreUpdate:
    return ScoreUpdate(
        hunt_id, player_id, total, _UNIX + timedelta(milliseconds=reached_ms), version
    )


def ms_timestamp(ms: int) -> Timestamp:
    return Timestamp(seconds=ms // 1000, nanos=(ms % 1000) * 1_000_000)


def timestamp_ms(ts: Timestamp) -> int:
    return ts.seconds * 1000 + ts.nanos // 1_000_000


def serve_scores(fake: score_pb2_grpc.ScoreServiceServicer) -> AbstractAsyncContextManager[str]:
    """The double on a free port; yields its address."""
    return serve(score_pb2_grpc.add_ScoreServiceServicer_to_server, fake)


@dataclass
class Stubs:
    """A running leaderboard: its stub (pass `client`/`service`/`admin` as
    metadata) and the real LeaderboardClient presenting the service token."""

    runtime: Runtime
    channel: grpc.aio.Channel
    stub: leaderboard_pb2_grpc.LeaderboardServiceStub
    submitter: LeaderboardClient

    client = bearer(CLIENT_TOKEN)
    service = bearer(SERVICE_TOKEN)
    admin = bearer(ADMIN_TOKEN)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.runtime.port}"

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        return self.runtime.metrics.registry.get_sample_value(name, labels or {})


@contextlib.asynccontextmanager
async def leaderboard(
    redis_url: str, score_addr: str, *, catalog: FakeCatalog | None = None, **settings: str
) -> AsyncIterator[Stubs]:
    """The leaderboard in process (reconciliation off unless set), with stubs.
    Geo's catalog is a double (`catalog`, or one where every hunt exists)
    unless GEO_SERVICE_ADDR is given."""
    settings.setdefault("LEADERBOARD_RECONCILE_S", "0")
    async with contextlib.AsyncExitStack() as stack:
        if "GEO_SERVICE_ADDR" not in settings:
            settings["GEO_SERVICE_ADDR"] = await stack.enter_async_context(serve_catalog(catalog))
        runtime = await stack.enter_async_context(
            in_process(
                "leaderboard",
                LEADERBOARD_REDIS_URL=redis_url,
                SCORE_SERVICE_ADDR=score_addr,
                **settings,
            )
        )
        target = f"127.0.0.1:{runtime.port}"
        channel = grpc.aio.insecure_channel(target)
        service_channel = grpc.aio.insecure_channel(
            target, interceptors=list(bearer_interceptors(SERVICE_TOKEN))
        )
        try:
            yield Stubs(
                runtime,
                channel,
                leaderboard_pb2_grpc.LeaderboardServiceStub(channel),
                LeaderboardClient(service_channel, timeout_s=5.0),
            )
        finally:
            await service_channel.close()
            await channel.close()


async def whole_board(lb: Stubs, hunt: str, limit: int = 1000) -> list[pb.LeaderboardEntry]:
    """Every entry, following page tokens."""
    entries: list[pb.LeaderboardEntry] = []
    token = ""
    while True:
        reply = await lb.stub.GetTop(
            pb.GetTopRequest(hunt_id=hunt, limit=limit, page_token=token), metadata=lb.client
        )
        entries.extend(reply.entries)
        token = reply.next_page_token
        if not token:
            return entries


def rows(entries) -> list[tuple[int, str, int, int]]:
    return [(e.rank, e.player_id, e.total_points, timestamp_ms(e.reached_at)) for e in entries]


def expected(board: dict[str, tuple[int, int]]) -> list[tuple[int, str, int, int]]:
    ordered = sorted(board.items(), key=lambda kv: (-kv[1][0], kv[1][1], kv[0]))
    return [(i + 1, p, t, ms) for i, (p, (t, ms)) in enumerate(ordered)]
