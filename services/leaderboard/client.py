"""How other services call the leaderboard: `LeaderboardClient` implements
services.leaderboard.model.LeaderboardApi over gRPC: `submit_scores` (score's
outbox relay), and whether the leaderboard is reachable (`connected`,
`wait_connected`), so a caller backing off can try again the moment it is
back. It returns the leaderboard's model types and declares none of its own."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from libs.channels import peer_error
from services.leaderboard.model import ScoreUpdate, SubmitCounts
from treasure.leaderboard.v1 import leaderboard_pb2, leaderboard_pb2_grpc


class LeaderboardClient:
    def __init__(self, channel: grpc.aio.Channel, timeout_s: float = 2.0) -> None:
        self._channel = channel
        self._stub = leaderboard_pb2_grpc.LeaderboardServiceStub(channel)
        self._timeout_s = timeout_s

    def connected(self) -> bool:
        """Whether the channel holds a connection to the leaderboard now."""
        return self._channel.get_state() is grpc.ChannelConnectivity.READY

    async def wait_connected(self, timeout_s: float) -> bool:
        """Waits up to `timeout_s` for the channel to (re)connect; whether it did."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._channel.channel_ready()
        except TimeoutError:
            return False
        return True

    async def submit_scores(
        self, updates: Sequence[ScoreUpdate], timeout_s: float | None = None
    ) -> SubmitCounts:
        """Raises libs.errors.Unavailable / ResourceExhausted when the board
        cannot take them now: the caller keeps them and retries."""
        request = leaderboard_pb2.SubmitScoresRequest()
        for update in updates:
            reached = Timestamp()
            reached.FromDatetime(update.reached_at)
            request.updates.add(
                hunt_id=update.hunt_id,
                player_id=update.player_id,
                total_points=update.total_points,
                reached_at=reached,
                version=update.version,
            )
        try:
            reply = await self._stub.SubmitScores(request, timeout=timeout_s or self._timeout_s)
        except grpc.aio.AioRpcError as err:
            raise peer_error("leaderboard", err) from err
        return SubmitCounts(applied=reply.applied, stale=reply.stale)
