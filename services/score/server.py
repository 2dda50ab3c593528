"""The gRPC face of the score service: validate, call service.Scores, map.

Only this module converts between proto messages and the domain values of
model.py; what Unlock and the reads do is in service.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from libs import validate
from libs.auth import INTERNAL, PUBLIC
from libs.server import Binding
from libs.timestamps import timestamp
from services.geo.model import MAX_POINTS  # the bound geo's catalog holds checkpoints to
from services.score.model import UnlockKind
from services.score.service import Scores
from treasure.score.v1 import score_pb2, score_pb2_grpc

#: The roles each RPC accepts (libs.auth); every RPC must be listed.
ROLES = {
    "Unlock": INTERNAL,
    "UnlockStream": INTERNAL,  # Unlock, many calls on one stream (libs.rpc multiplexed)
    "GetScore": PUBLIC,
    "GetProgress": PUBLIC,
    "StreamScores": INTERNAL,
}

#: The stream methods that carry many calls of a unary method (libs.rpc).
MULTIPLEXED = {"UnlockStream": "Unlock"}

STREAM_PAGE_DEFAULT = 1000
STREAM_PAGE_MAX = 5000

_RESULTS = {
    UnlockKind.UNLOCKED: score_pb2.UNLOCK_RESULT_UNLOCKED,
    UnlockKind.REPLAYED: score_pb2.UNLOCK_RESULT_UNLOCKED,
    UnlockKind.ALREADY_UNLOCKED: score_pb2.UNLOCK_RESULT_ALREADY_UNLOCKED,
}


class ScoreServicer(score_pb2_grpc.ScoreServiceServicer):
    def __init__(self, scores: Scores) -> None:
        self._scores = scores

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
        outcome = await self._scores.unlock(
            scan_id=scan_id,
            hunt_id=hunt_id,
            player_id=player_id,
            checkpoint_id=checkpoint_id,
            points=points,
            first_finder_bonus=bonus,
            at=at,
        )
        return score_pb2.UnlockResponse(
            result=_RESULTS[outcome.kind],
            points_awarded=outcome.points_awarded,
            first_finder=outcome.first_finder,
            total_points=outcome.score.total_points,
            checkpoints_found=outcome.score.checkpoints_found,
            unlock_scan_id=outcome.unlock_scan_id,
        )

    def UnlockStream(self, request_iterator, context):
        """Never called: libs.rpc serves this stream as many Unlock calls
        (MULTIPLEXED), each through Unlock above."""
        raise NotImplementedError("UnlockStream is served by libs.rpc as Unlock calls")

    async def GetScore(
        self, request: score_pb2.GetScoreRequest, context: grpc.aio.ServicerContext
    ) -> score_pb2.GetScoreResponse:
        hunt_id = validate.require_id("hunt_id", request.hunt_id)
        player_id = validate.require_id("player_id", request.player_id)
        score = await self._scores.score(hunt_id, player_id)
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
        progress = await self._scores.progress(hunt_id, player_id)
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
        async for page in self._scores.totals(hunt_id, size):
            response = score_pb2.StreamScoresResponse()
            for total in page:
                item = response.totals.add(
                    player_id=total.player_id,
                    total_points=total.total_points,
                    version=total.version,
                )
                item.reached_at.FromDatetime(total.reached_at)
            yield response  # grpc flow control: the next page waits for this one


def binding(servicer: ScoreServicer) -> Binding:
    return Binding(
        descriptor=score_pb2.DESCRIPTOR.services_by_name["ScoreService"],
        add_to_server=score_pb2_grpc.add_ScoreServiceServicer_to_server,
        servicer=servicer,
        roles=ROLES,
        multiplexed=MULTIPLEXED,
    )
