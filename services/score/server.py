"""The gRPC face of the score service: validate, call, map.

Only this module converts between proto messages and the domain values of
model.py. Unlock writes Postgres (the truth), wakes the outbox relay and then
writes the hot tier through; reads try the hot tier and fall back to Postgres
with one load per key at a time (single-flight), refilling the hot tier.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import grpc
from opentelemetry import propagate, trace

from libs import validate
from libs.auth import INTERNAL, PUBLIC
from libs.cache import SingleFlight
from libs.server import Binding
from libs.timestamps import timestamp
from services.geo.model import MAX_POINTS, HuntNotFound, Hunts  # MAX_POINTS: geo's catalog bound
from services.score.cache import HotTier
from services.score.model import Progress, Score, UnlockedCheckpoint, UnlockKind
from services.score.store import ScoreStore
from treasure.score.v1 import score_pb2, score_pb2_grpc

#: The roles each RPC accepts (libs.auth); every RPC must be listed.
ROLES = {
    "Unlock": INTERNAL,
    "GetScore": PUBLIC,
    "GetProgress": PUBLIC,
    "StreamScores": INTERNAL,
}

STREAM_PAGE_DEFAULT = 1000
STREAM_PAGE_MAX = 5000

_RESULTS = {
    UnlockKind.UNLOCKED: score_pb2.UNLOCK_RESULT_UNLOCKED,
    UnlockKind.REPLAYED: score_pb2.UNLOCK_RESULT_UNLOCKED,
    UnlockKind.ALREADY_UNLOCKED: score_pb2.UNLOCK_RESULT_ALREADY_UNLOCKED,
}


class ScoreServicer(score_pb2_grpc.ScoreServiceServicer):
    def __init__(
        self,
        store: ScoreStore,
        hot: HotTier,
        hunts: Hunts,
        tracer: trace.Tracer,
        on_commit: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self._hot = hot
        self._hunts = hunts
        self._tracer = tracer
        self._on_commit = on_commit
        self._score_loads: SingleFlight[tuple[str, str], Score] = SingleFlight()
        self._progress_loads: SingleFlight[tuple[str, str], Progress] = SingleFlight()

    async def Unlock(
        self, request: score_pb2.UnlockRequest, context: grpc.aio.ServicerContext
    ) -> score_pb2.UnlockResponse:
        scan_id = validate.require_id("scan_id", request.scan_id)
        hunt_id = validate.require_id("hunt_id", request.hunt_id)
        player_id = validate.require_id("player_id", request.player_id)
        checkpoint_id = validate.require_id("checkpoint_id", request.checkpoint_id)
        points = validate.require_int("points", request.points, low=0, high=MAX_POINTS)
        bonus = validate.require_int(
            "first_finder_bonus", request.first_finder_bonus, low=0, high=MAX_POINTS
        )
        at = validate.require_time("at", request.at, request.HasField("at"))
        with self._tracer.start_as_current_span(
            "score.unlock",
            attributes={"hunt.id": hunt_id, "player.id": player_id, "checkpoint.id": checkpoint_id},
        ) as span:
            carrier: dict[str, str] = {}
            propagate.inject(carrier)  # the outbox row carries this trace to the leaderboard
            outcome = await self._store.unlock(
                scan_id=scan_id,
                hunt_id=hunt_id,
                player_id=player_id,
                checkpoint_id=checkpoint_id,
                points=points,
                first_finder_bonus=bonus,
                at=at,
                traceparent=carrier.get("traceparent", ""),
                tracestate=carrier.get("tracestate", ""),
            )
            span.set_attribute("outcome", outcome.kind.value)
            if outcome.kind is UnlockKind.UNLOCKED:
                self._on_commit()
                await self._hot.record_unlock(
                    hunt_id,
                    player_id,
                    outcome.score,
                    UnlockedCheckpoint(
                        checkpoint_id=checkpoint_id,
                        points_awarded=outcome.points_awarded,
                        first_finder=outcome.first_finder,
                        unlocked_at=at,
                        scan_id=scan_id,
                    ),
                )
        return score_pb2.UnlockResponse(
            result=_RESULTS[outcome.kind],
            points_awarded=outcome.points_awarded,
            first_finder=outcome.first_finder,
            total_points=outcome.score.total_points,
            checkpoints_found=outcome.score.checkpoints_found,
            unlock_scan_id=outcome.unlock_scan_id,
        )

    async def GetScore(
        self, request: score_pb2.GetScoreRequest, context: grpc.aio.ServicerContext
    ) -> score_pb2.GetScoreResponse:
        hunt_id = validate.require_id("hunt_id", request.hunt_id)
        player_id = validate.require_id("player_id", request.player_id)
        score = await self._hot.score(hunt_id, player_id)
        if score is None:
            score = await self._score_loads.do(
                (hunt_id, player_id), lambda: self._load_score(hunt_id, player_id)
            )
        if score.checkpoints_found == 0:
            await self._require_hunt(hunt_id)
        response = score_pb2.GetScoreResponse(
            total_points=score.total_points, checkpoints_found=score.checkpoints_found
        )
        if score.reached_at is not None:
            response.reached_at.FromDatetime(score.reached_at)
        return response

    async def GetProgress(
        self, request: score_pb2.GetProgressRequest, context: grpc.aio.ServicerContext
    ) -> score_pb2.GetProgressResponse:
        hunt_id = validate.require_id("hunt_id", request.hunt_id)
        player_id = validate.require_id("player_id", request.player_id)
        progress = await self._hot.progress(hunt_id, player_id)
        if progress is None:
            progress = await self._progress_loads.do(
                (hunt_id, player_id), lambda: self._load_progress(hunt_id, player_id)
            )
        if progress.score.checkpoints_found == 0:
            await self._require_hunt(hunt_id)
        response = score_pb2.GetProgressResponse(
            total_points=progress.score.total_points,
            checkpoints_found=progress.score.checkpoints_found,
        )
        for cp in progress.checkpoints:
            response.checkpoints.add(
                checkpoint_id=cp.checkpoint_id,
                points_awarded=cp.points_awarded,
                first_finder=cp.first_finder,
                unlocked_at=timestamp(cp.unlocked_at),
                scan_id=cp.scan_id,
            )
        return response

    async def StreamScores(
        self, request: score_pb2.StreamScoresRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[score_pb2.StreamScoresResponse]:
        hunt_id = validate.require_id("hunt_id", request.hunt_id)
        size = validate.page_size(
            "page_size", request.page_size, default=STREAM_PAGE_DEFAULT, maximum=STREAM_PAGE_MAX
        )
        async for page in self._store.totals(hunt_id, size):
            response = score_pb2.StreamScoresResponse()
            for total in page:
                item = response.totals.add(
                    player_id=total.player_id,
                    total_points=total.total_points,
                    version=total.version,
                )
                item.reached_at.FromDatetime(total.reached_at)
            yield response  # grpc flow control: the next page waits for this one

    async def _require_hunt(self, hunt_id: str) -> None:
        """A player with nothing found: NOT_FOUND when the hunt does not exist
        (geo's catalog, cached; when geo cannot say, the zero score stands)."""
        if await self._hunts.exists(hunt_id) is False:
            raise HuntNotFound(hunt_id)

    async def _load_score(self, hunt_id: str, player_id: str) -> Score:
        score = await self._store.score(hunt_id, player_id)
        await self._hot.fill_score(hunt_id, player_id, score)
        return score

    async def _load_progress(self, hunt_id: str, player_id: str) -> Progress:
        progress = await self._store.progress(hunt_id, player_id)
        await self._hot.fill_progress(hunt_id, player_id, progress)
        return progress


def binding(servicer: ScoreServicer) -> Binding:
    return Binding(
        descriptor=score_pb2.DESCRIPTOR.services_by_name["ScoreService"],
        add_to_server=score_pb2_grpc.add_ScoreServiceServicer_to_server,
        servicer=servicer,
        roles=ROLES,
    )
