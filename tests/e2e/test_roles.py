"""The role matrix: every RPC of every service, with no token, a wrong token,
and each role's token. Requests are empty, so an allowed call ends in
validation (INVALID_ARGUMENT), never in a write."""

from __future__ import annotations

import grpc
import pytest

from libs.auth import Role
from services.geo.server import ROLES as GEO
from services.leaderboard.server import ROLES as LEADERBOARD
from services.scan.server import ROLES as SCAN
from services.score.server import ROLES as SCORE
from tests.support.env import ADMIN_TOKEN, CLIENT_TOKEN, SERVICE_TOKEN, bearer
from tests.support.stack import Stack
from treasure.geo.v1 import geo_pb2
from treasure.leaderboard.v1 import leaderboard_pb2
from treasure.scan.v1 import scan_pb2
from treasure.score.v1 import score_pb2

SERVICES = {
    "scan": (scan_pb2, "ScanService", SCAN),
    "score": (score_pb2, "ScoreService", SCORE),
    "leaderboard": (leaderboard_pb2, "LeaderboardService", LEADERBOARD),
    "geo": (geo_pb2, "GeoService", GEO),
}
CREDENTIALS = {
    "none": (None, None),
    "wrong": (bearer("not-a-token"), None),
    "client": (bearer(CLIENT_TOKEN), Role.CLIENT),
    "service": (bearer(SERVICE_TOKEN), Role.SERVICE),
    "admin": (bearer(ADMIN_TOKEN), Role.ADMIN),
}
CASES = [
    (service, method.name, credential)
    for service, (module, name, _) in SERVICES.items()
    for method in module.DESCRIPTOR.services_by_name[name].methods
    for credential in CREDENTIALS
]


async def _call(stack: Stack, service: str, method_name: str, metadata) -> grpc.StatusCode:
    module, name, _ = SERVICES[service]
    method = module.DESCRIPTOR.services_by_name[name].methods_by_name[method_name]
    request_class = getattr(module, method.input_type.name)
    response_class = getattr(module, method.output_type.name)
    path = f"/{method.containing_service.full_name}/{method.name}"
    channel = stack.channel(service)
    kwargs = dict(
        request_serializer=request_class.SerializeToString,
        response_deserializer=response_class.FromString,
    )
    try:
        if method.server_streaming:
            call = channel.unary_stream(path, **kwargs)(
                request_class(), metadata=metadata, timeout=5
            )
            async for _ in call:
                break
            call.cancel()
        else:
            await channel.unary_unary(path, **kwargs)(request_class(), metadata=metadata, timeout=5)
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize(("service", "method", "credential"), CASES)
async def test_role_matrix(stack: Stack, service: str, method: str, credential: str):
    metadata, role = CREDENTIALS[credential]
    code = await _call(stack, service, method, metadata)
    if role is None:
        assert code == grpc.StatusCode.UNAUTHENTICATED
    elif role in SERVICES[service][2][method]:
        assert code not in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.INTERNAL,
                            grpc.StatusCode.UNKNOWN, grpc.StatusCode.UNIMPLEMENTED), code  # fmt: skip
    else:
        assert code == grpc.StatusCode.PERMISSION_DENIED


def test_a_client_token_never_reaches_an_internal_rpc():
    internal = {
        ("score", "Unlock"),
        ("score", "StreamScores"),
        ("geo", "CheckIn"),
        ("leaderboard", "SubmitScores"),
    }
    for service, method in internal:
        assert SERVICES[service][2][method] == {Role.SERVICE}
