"""Our four gRPC APIs as tests drive them generically, by descriptor: each
service's generated module, its service name and the server's own role table
(`ROLES`), and a call of any RPC by name that ends in its status code.

The role tables here are what the servers enforce: use them to pick a token
that may call an RPC (tests/e2e/test_fuzz.py), never as the expectation of a
test of the policy itself (tests/e2e/test_roles.py pins its own)."""

from __future__ import annotations

import grpc
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message

from services.geo.server import ROLES as GEO
from services.leaderboard.server import ROLES as LEADERBOARD
from services.scan.server import ROLES as SCAN
from services.score.server import ROLES as SCORE
from treasure.geo.v1 import geo_pb2
from treasure.leaderboard.v1 import leaderboard_pb2
from treasure.scan.v1 import scan_pb2
from treasure.score.v1 import score_pb2

#: service -> (generated module, service name in the proto, the server's ROLES)
APIS = {
    "scan": (scan_pb2, "ScanService", SCAN),
    "score": (score_pb2, "ScoreService", SCORE),
    "leaderboard": (leaderboard_pb2, "LeaderboardService", LEADERBOARD),
    "geo": (geo_pb2, "GeoService", GEO),
}


def methods(service: str) -> list[MethodDescriptor]:
    """Every RPC of a service, from its descriptor."""
    module, name, _ = APIS[service]
    return list(module.DESCRIPTOR.services_by_name[name].methods)


def method(service: str, method_name: str) -> MethodDescriptor:
    module, name, _ = APIS[service]
    return module.DESCRIPTOR.services_by_name[name].methods_by_name[method_name]


def request_class(service: str, method_name: str) -> type[Message]:
    return getattr(APIS[service][0], method(service, method_name).input_type.name)


_CODES = {code.value[0]: code.value for code in grpc.StatusCode}


async def _one_streamed_call(channel, path, kwargs, message, metadata, deadline_s):
    """`message` as the one call on a new multiplexed stream: the status of
    its answer, or the stream's. grpc.aio turns a write that races the
    server's refusal of the stream (a token refused at once) into INTERNAL
    "Internal error from Core" locally, hiding the server's status: that
    one outcome is tried again, a few times."""
    for _ in range(5):
        calls = channel.stream_stream(path, **kwargs)(metadata=metadata, timeout=deadline_s)
        try:
            await calls.write(message)
            first = await calls.read()
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.INTERNAL and err.details() == _CORE_RACE:
                continue
            raise
        finally:
            calls.cancel()
        if first is not grpc.aio.EOF and first.HasField("error"):
            return grpc.StatusCode(_CODES[first.error.code]), first.error.message
        return grpc.StatusCode.OK, ""
    return grpc.StatusCode.INTERNAL, _CORE_RACE


_CORE_RACE = "Internal error from Core"


async def call(
    channel: grpc.aio.Channel,
    service: str,
    method_name: str,
    request: Message | None = None,
    *,
    metadata=None,
    deadline_s: float = 5,
) -> tuple[grpc.StatusCode, str]:
    """Calls one RPC by name (an empty request unless given) and returns its
    status code and details; of a server stream, only the first message is read;
    on a multiplexed stream, the request is sent as one call (`request`: the
    envelope) and its answer's status is returned."""
    module = APIS[service][0]
    descriptor = method(service, method_name)
    request_cls = getattr(module, descriptor.input_type.name)
    response_cls = getattr(module, descriptor.output_type.name)
    path = f"/{descriptor.containing_service.full_name}/{descriptor.name}"
    kwargs = dict(
        request_serializer=request_cls.SerializeToString,
        response_deserializer=response_cls.FromString,
    )
    message = request_cls() if request is None else request
    try:
        if descriptor.client_streaming:  # a multiplexed stream: one call on it
            return await _one_streamed_call(channel, path, kwargs, message, metadata, deadline_s)
        elif descriptor.server_streaming:
            stream = channel.unary_stream(path, **kwargs)(
                message, metadata=metadata, timeout=deadline_s
            )
            async for _ in stream:
                break
            stream.cancel()
        else:
            await channel.unary_unary(path, **kwargs)(
                message, metadata=metadata, timeout=deadline_s
            )
    except grpc.aio.AioRpcError as err:
        return err.code(), err.details() or ""
    return grpc.StatusCode.OK, ""
