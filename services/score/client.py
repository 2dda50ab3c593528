"""How other services call score: `ScoreClient` implements
services.score.model.ScoreApi over gRPC (`unlock` for scan, `stream_scores` for
leaderboard rebuilds), plus `get_score` and `get_progress`; it returns score's
model types and declares none of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import grpc

from libs.channels import peer_error
from libs.timestamps import timestamp
from services.score.model import (
    ZERO,
    PlayerTotal,
    Progress,
    Score,
    UnlockAnswer,
    UnlockedCheckpoint,
)
from treasure.score.v1 import score_pb2, score_pb2_grpc

UNLOCK = "/treasure.score.v1.ScoreService/Unlock"
UNLOCK_STREAM = "/treasure.score.v1.ScoreService/UnlockStream"


class ScoreClient:
    def __init__(
        self, channel: grpc.aio.Channel, timeout_s: float = 2.0, *, multiplexed: bool = False
    ) -> None:
        """`multiplexed`: unlocks go as calls on one UnlockStream (the channel
        must be a libs.channels.PeerChannel), not one Unlock each."""
        self._stub = score_pb2_grpc.ScoreServiceStub(channel)
        self._unlock = (
            channel.multiplexed(UNLOCK_STREAM, UNLOCK) if multiplexed else self._stub.Unlock
        )
        self._timeout_s = timeout_s

    async def unlock(
        self,
        *,
        scan_id: str,
        hunt_id: str,
        player_id: str,
        checkpoint_id: str,
        points: int,
        first_finder_bonus: int,
        at: datetime,
        timeout_s: float | None = None,
    ) -> UnlockAnswer:
        request = score_pb2.UnlockRequest(
            scan_id=scan_id,
            hunt_id=hunt_id,
            player_id=player_id,
            checkpoint_id=checkpoint_id,
            points=points,
            first_finder_bonus=first_finder_bonus,
            at=timestamp(at),
        )
        try:
            reply = await self._unlock(request, timeout=timeout_s or self._timeout_s)
        except grpc.aio.AioRpcError as err:
            raise peer_error("score", err) from err
        return UnlockAnswer(
            unlocked=reply.result == score_pb2.UNLOCK_RESULT_UNLOCKED,
            points_awarded=reply.points_awarded,
            first_finder=reply.first_finder,
            total_points=reply.total_points,
            checkpoints_found=reply.checkpoints_found,
            unlock_scan_id=reply.unlock_scan_id,
        )

    async def get_score(
        self, hunt_id: str, player_id: str, timeout_s: float | None = None
    ) -> Score:
        try:
            reply = await self._stub.GetScore(
                score_pb2.GetScoreRequest(hunt_id=hunt_id, player_id=player_id),
                timeout=timeout_s or self._timeout_s,
            )
        except grpc.aio.AioRpcError as err:
            raise peer_error("score", err) from err
        return _score(reply)

    async def get_progress(
        self, hunt_id: str, player_id: str, timeout_s: float | None = None
    ) -> Progress:
        try:
            reply = await self._stub.GetProgress(
                score_pb2.GetProgressRequest(hunt_id=hunt_id, player_id=player_id),
                timeout=timeout_s or self._timeout_s,
            )
        except grpc.aio.AioRpcError as err:
            raise peer_error("score", err) from err
        return Progress(
            score=_score(reply),
            checkpoints=tuple(
                UnlockedCheckpoint(
                    checkpoint_id=c.checkpoint_id,
                    points_awarded=c.points_awarded,
                    first_finder=c.first_finder,
                    unlocked_at=c.unlocked_at.ToDatetime(tzinfo=UTC),
                    scan_id=c.scan_id,
                )
                for c in reply.checkpoints
            ),
        )

    async def stream_scores(
        self, hunt_id: str, page_size: int = 1000, timeout_s: float = 600.0
    ) -> AsyncIterator[list[PlayerTotal]]:
        """Every total of a hunt, one page at a time (ordered by player_id)."""
        call = self._stub.StreamScores(
            score_pb2.StreamScoresRequest(hunt_id=hunt_id, page_size=page_size), timeout=timeout_s
        )
        try:
            async for page in call:
                yield [
                    PlayerTotal(
                        player_id=t.player_id,
                        total_points=t.total_points,
                        reached_at=t.reached_at.ToDatetime(tzinfo=UTC),
                        version=t.version,
                    )
                    for t in page.totals
                ]
        except grpc.aio.AioRpcError as err:
            raise peer_error("score", err) from err
        finally:
            call.cancel()


def _score(reply: score_pb2.GetScoreResponse | score_pb2.GetProgressResponse) -> Score:
    """A score as the wire tells it: without its version (0), and without
    reached_at for GetProgress."""
    if reply.total_points == 0 and reply.checkpoints_found == 0:
        return ZERO
    reached = None
    if isinstance(reply, score_pb2.GetScoreResponse) and reply.HasField("reached_at"):
        reached = reply.reached_at.ToDatetime(tzinfo=UTC)
    return Score(reply.total_points, reply.checkpoints_found, reached, version=0)
