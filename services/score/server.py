"""The gRPC face of the score service: validate, call, map."""

from __future__ import annotations

from libs.auth import INTERNAL, PUBLIC
from libs.server import Binding
from treasure.score.v1 import score_pb2, score_pb2_grpc

#: The roles each RPC accepts (libs.auth); every RPC must be listed.
ROLES = {
    "Unlock": INTERNAL,
    "GetScore": PUBLIC,
    "GetProgress": PUBLIC,
    "StreamScores": INTERNAL,
}


class ScoreServicer(score_pb2_grpc.ScoreServiceServicer):
    pass


def binding(servicer: ScoreServicer) -> Binding:
    return Binding(
        descriptor=score_pb2.DESCRIPTOR.services_by_name["ScoreService"],
        add_to_server=score_pb2_grpc.add_ScoreServiceServicer_to_server,
        servicer=servicer,
        roles=ROLES,
    )
