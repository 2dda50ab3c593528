"""Arbitrary and oversized input to every RPC (with a token that may call it):
only documented statuses come back — never INTERNAL or UNKNOWN, never a crash
— and no id that breaks the key rules ever reaches a Redis key."""

from __future__ import annotations

import re

import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from libs import rediskit
from libs.auth import Role
from tests.e2e.test_roles import SERVICES
from tests.support.env import ADMIN_TOKEN, CLIENT_TOKEN, SERVICE_TOKEN, bearer
from tests.support.stack import Stack

ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
}
TOKEN = {Role.CLIENT: CLIENT_TOKEN, Role.SERVICE: SERVICE_TOKEN, Role.ADMIN: ADMIN_TOKEN}
# Every key any service writes: a prefix, then ids that keep the id rule inside
# their hash tag and segments.
ID = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
KEY = re.compile(rf"[a-z]+(:[a-z_]+)*:\{{{ID}(:{ID})?\}}(:[A-Za-z0-9_.:-]+)?")

nasty_text = st.one_of(
    st.text(max_size=80),
    st.sampled_from(
        ["", "{h}", "a:b", "a b", "a\nb", "x" * 65, "x" * 5000, "ok-id", "p1", "h1", "\x00", "ü"]
    ),
)
numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -1.0, 90.0, 180.000001, 1e308]),
)


def message_strategy(descriptor, depth: int = 0):
    fields = {}
    for field in descriptor.fields:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if depth > 2:
                continue
            if field.message_type.full_name == "google.protobuf.Timestamp":
                inner = st.fixed_dictionaries(
                    {
                        "seconds": st.integers(-(2**40), 2**40),
                        "nanos": st.integers(-(10**9), 2 * 10**9),
                    }
                )
            else:
                inner = message_strategy(field.message_type, depth + 1)
        elif field.type == FieldDescriptor.TYPE_STRING:
            inner = nasty_text
        elif field.type == FieldDescriptor.TYPE_BYTES:
            inner = st.one_of(st.binary(max_size=64), st.just(b"x" * 300_000))
        elif field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
            inner = numbers
        elif field.type == FieldDescriptor.TYPE_BOOL:
            inner = st.booleans()
        elif field.type == FieldDescriptor.TYPE_ENUM:
            inner = st.integers(-1, 8)
        elif field.type in (
            FieldDescriptor.TYPE_INT64,
            FieldDescriptor.TYPE_UINT64,
            FieldDescriptor.TYPE_SINT64,
        ):
            inner = (
                st.integers(-(2**63), 2**63 - 1)
                if field.type != FieldDescriptor.TYPE_UINT64
                else st.integers(0, 2**64 - 1)
            )
        else:
            inner = st.integers(-(2**31), 2**31 - 1)
        if field.is_repeated:
            inner = st.lists(inner, max_size=3)
        fields[field.name] = st.one_of(st.none(), inner)
    return st.fixed_dictionaries(fields)


def build(cls, values: dict):
    message = cls()
    for name, value in values.items():
        if value is None:
            continue
        field = cls.DESCRIPTOR.fields_by_name[name]
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            sub_cls = type(getattr(message, name)) if not field.is_repeated else None
            if field.is_repeated:
                for item in value:
                    target = getattr(message, name).add()
                    target.CopyFrom(build(type(target), item))
            else:
                getattr(message, name).CopyFrom(build(sub_cls, value))
        elif field.is_repeated:
            getattr(message, name).extend(value)
        else:
            setattr(message, name, value)
    return message


CASES = [
    (service, method.name)
    for service, (module, name, _) in SERVICES.items()
    for method in module.DESCRIPTOR.services_by_name[name].methods
]


@pytest.mark.parametrize(("service", "method_name"), CASES)
async def test_arbitrary_input_gets_only_documented_statuses(
    stack: Stack, service: str, method_name: str
):
    module, name, roles = SERVICES[service]
    method = module.DESCRIPTOR.services_by_name[name].methods_by_name[method_name]
    request_class = getattr(module, method.input_type.name)
    response_class = getattr(module, method.output_type.name)
    path = f"/{method.containing_service.full_name}/{method.name}"
    channel = stack.channel(service)
    kwargs = dict(
        request_serializer=request_class.SerializeToString,
        response_deserializer=response_class.FromString,
    )
    metadata = bearer(TOKEN[sorted(roles[method_name])[0]])

    # Hypothesis draws the requests (it cannot drive a coroutine itself); they
    # are then sent one by one on this loop.
    drawn: list[dict] = []

    @settings(
        max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None
    )
    @given(values=message_strategy(request_class.DESCRIPTOR))
    def draw(values):
        drawn.append(values)

    draw()
    for values in drawn:
        try:
            request = build(request_class, values)
        except (ValueError, TypeError, OverflowError):
            continue  # not representable in the proto: nothing to send
        try:
            if method.server_streaming:
                call = channel.unary_stream(path, **kwargs)(request, metadata=metadata, timeout=5)
                async for _ in call:
                    break
                call.cancel()
            else:
                await channel.unary_unary(path, **kwargs)(request, metadata=metadata, timeout=5)
        except grpc.aio.AioRpcError as err:
            assert err.code() in ALLOWED, (err.code(), err.details(), request)
    for process in stack.processes.values():
        assert process.poll() is None, "a service died"


async def test_no_bad_id_reached_a_redis_key(stack: Stack):
    for service, server in stack.redis.items():
        client = rediskit.connect(server.url)
        try:
            keys = [k async for k in client.scan_iter(count=1000)]
        finally:
            await client.aclose()
        for key in keys:
            assert KEY.fullmatch(key), f"{service}: key {key!r} breaks the key rules"
