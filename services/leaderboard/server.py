"""The gRPC face of the leaderboard service: validate, call, map."""

from __future__ import annotations

from libs.auth import ADMIN, INTERNAL, PUBLIC
from libs.server import Binding
from treasure.leaderboard.v1 import leaderboard_pb2, leaderboard_pb2_grpc

#: The roles each RPC accepts (libs.auth); every RPC must be listed.
ROLES = {
    "SubmitScores": INTERNAL,
    "GetTop": PUBLIC,
    "GetRank": PUBLIC,
    "GetAround": PUBLIC,
    "WatchTop": PUBLIC,
    "RebuildBoard": ADMIN,
}


class LeaderboardServicer(leaderboard_pb2_grpc.LeaderboardServiceServicer):
    pass


def binding(servicer: LeaderboardServicer) -> Binding:
    return Binding(
        descriptor=leaderboard_pb2.DESCRIPTOR.services_by_name["LeaderboardService"],
        add_to_server=leaderboard_pb2_grpc.add_LeaderboardServiceServicer_to_server,
        servicer=servicer,
        roles=ROLES,
    )
