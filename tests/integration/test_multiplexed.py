"""Calls of a unary method multiplexed on one stream (libs.rpc `multiplexed`,
libs.channels `Multiplexed`), on a real grpc.aio server and a real
PeerChannel: each call gets its own answer, error, deadline and span, as the
unary call would; the token is checked; a stream that breaks is replaced and
its calls are sent again."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from libs import errors
from libs.channels import PeerChannel, open_channel
from libs.config import Env, ServiceSettings, peer_target
from libs.server import Runtime
from services.geo.client import CHECK_IN, CHECK_IN_STREAM
from tests.support.env import CLIENT_TOKEN, SERVICE_TOKEN
from tests.support.fakes import geo_binding
from tests.support.polling import eventually
from tests.support.rpcerrors import bad_fields, error_info, retry_info
from tools.inprocess import service_env
from tools.localinfra import free_port
from treasure.geo.v1 import geo_pb2, geo_pb2_grpc


class Echoing(geo_pb2_grpc.GeoServiceServicer):
    """CheckIn answers by its player_id: `n-<k>` gives distance k; `slow-<ms>`
    waits; `busy`, `bad` and `boom` fail as a domain error, a bad field and a
    bug."""

    def __init__(self) -> None:
        self.calls = 0
        self.cancelled = 0
        self.time_left: list[float | None] = []

    async def CheckIn(self, request, context):
        self.calls += 1
        self.time_left.append(context.time_remaining())
        kind, _, arg = request.player_id.partition("-")
        if kind == "slow":
            try:
                await asyncio.sleep(int(arg) / 1000)
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        elif kind == "busy":
            raise errors.Unavailable("busy now", retry_after_s=0.5, reason="TEST_BUSY")
        elif kind == "bad":
            raise errors.InvalidArgument("tag_id", "is not a tag")
        elif kind == "boom":
            raise RuntimeError("a bug")
        return geo_pb2.CheckInResponse(distance_m=float(arg or 0))


def _settings(prefix: str, **extra: str) -> ServiceSettings:
    env = Env(service_env(prefix, **extra))
    result = ServiceSettings.read(env, prefix, 0, 0)
    env.finish()
    return result


async def _serve(servicer: Echoing, port: int = 0) -> Runtime:
    listen = {"GEO_GRPC_LISTEN": f"127.0.0.1:{port}"} if port else {}
    runtime = Runtime("geo", _settings("GEO", **listen))
    await runtime.serve(geo_binding(servicer))
    return runtime


def _request(player_id: str) -> geo_pb2.CheckInRequest:
    return geo_pb2.CheckInRequest(hunt_id="h", player_id=player_id, tag_id="t")


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter


async def test_many_calls_on_one_stream_each_get_their_own_answer(spans):
    provider, exporter = spans
    servicer = Echoing()
    runtime = await _serve(servicer)
    channel = open_channel(
        f"127.0.0.1:{runtime.port}", _settings("SCAN"), provider.get_tracer("t"), SERVICE_TOKEN
    )
    try:
        check_in = channel.multiplexed(CHECK_IN_STREAM, CHECK_IN)
        answers = await asyncio.gather(
            *(check_in(_request(f"n-{k}"), timeout=10) for k in range(300))
        )
        assert [a.distance_m for a in answers] == [float(k) for k in range(300)]
        assert servicer.calls == 300
        # each call's own deadline reached the servicer (rounded up to ms on the wire)
        assert all(left is not None and 0 < left <= 10.001 for left in servicer.time_left)
        client = [s for s in exporter.get_finished_spans() if s.name == CHECK_IN]
        assert len(client) == 300 and len({s.context.trace_id for s in client}) == 300
        assert all(s.attributes["rpc.grpc.status_code"] == 0 for s in client)
    finally:
        await channel.close()
        await runtime.close()


async def test_each_call_fails_alone_with_the_status_a_unary_call_would_have():
    servicer = Echoing()
    runtime = await _serve(servicer)
    target = f"127.0.0.1:{runtime.port}"
    channel = open_channel(target, _settings("SCAN"), None, SERVICE_TOKEN)
    try:
        check_in = channel.multiplexed(CHECK_IN_STREAM, CHECK_IN)
        unary = geo_pb2_grpc.GeoServiceStub(channel)
        for player, code in (
            ("busy", grpc.StatusCode.UNAVAILABLE),
            ("bad", grpc.StatusCode.INVALID_ARGUMENT),
            ("boom", grpc.StatusCode.INTERNAL),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as streamed:
                await check_in(_request(player), timeout=5)
            with pytest.raises(grpc.aio.AioRpcError) as alone:
                await unary.CheckIn(_request(player), timeout=5)
            assert streamed.value.code() == alone.value.code() == code
            assert streamed.value.details() == alone.value.details()
            if code is not grpc.StatusCode.INTERNAL:
                assert error_info(streamed.value) == error_info(alone.value)
        with pytest.raises(grpc.aio.AioRpcError) as busy:
            await check_in(_request("busy"), timeout=5)
        assert error_info(busy.value).reason == "TEST_BUSY"
        assert retry_info(busy.value).retry_delay.ToTimedelta().total_seconds() == 0.5
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await check_in(_request("bad"), timeout=5)
        assert bad_fields(bad.value) == ["tag_id"]
        # the stream is still open and serves the next call
        assert (await check_in(_request("n-7"), timeout=5)).distance_m == 7.0
    finally:
        await channel.close()
        await runtime.close()


async def test_a_call_past_its_deadline_is_dropped_alone():
    servicer = Echoing()
    runtime = await _serve(servicer)
    channel = open_channel(f"127.0.0.1:{runtime.port}", _settings("SCAN"), None, SERVICE_TOKEN)
    try:
        check_in = channel.multiplexed(CHECK_IN_STREAM, CHECK_IN)
        slow = asyncio.ensure_future(check_in(_request("slow-5000"), timeout=0.2))
        fast = await check_in(_request("n-1"), timeout=5)
        assert fast.distance_m == 1.0  # not behind the slow one
        with pytest.raises(grpc.aio.AioRpcError) as late:
            await slow
        assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        for _ in range(100):  # the server dropped its work at the same deadline
            if servicer.cancelled:
                break
            await asyncio.sleep(0.02)
        assert servicer.cancelled == 1
    finally:
        await channel.close()
        await runtime.close()


async def test_the_stream_needs_the_methods_role():
    runtime = await _serve(Echoing())
    channel = open_channel(f"127.0.0.1:{runtime.port}", _settings("SCAN"), None, CLIENT_TOKEN)
    try:
        check_in = channel.multiplexed(CHECK_IN_STREAM, CHECK_IN)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await check_in(_request("n-1"), timeout=5)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        await channel.close()
        await runtime.close()


async def test_a_broken_stream_is_replaced_by_a_new_one():
    """The server goes away and comes back on its port: a call made while
    nobody serves fails UNAVAILABLE after its retries; once the server is
    back, the next call opens a new stream and is answered."""
    port = free_port()
    first = Echoing()
    runtime = await _serve(first, port)
    channel = open_channel(f"127.0.0.1:{port}", _settings("SCAN"), None, SERVICE_TOKEN)
    try:
        check_in = channel.multiplexed(CHECK_IN_STREAM, CHECK_IN)
        assert (await check_in(_request("n-1"), timeout=5)).distance_m == 1.0
        await runtime.close()
        with pytest.raises(grpc.aio.AioRpcError) as down:
            await check_in(_request("n-2"), timeout=5)
        assert down.value.code() == grpc.StatusCode.UNAVAILABLE
        second = Echoing()
        runtime = await _serve(second, port)
        for _ in range(100):  # the channel reconnects within its backoff (1 s at most)
            try:
                answer = await check_in(_request("n-3"), timeout=5)
                break
            except grpc.aio.AioRpcError as err:
                assert err.code() == grpc.StatusCode.UNAVAILABLE
                await asyncio.sleep(0.05)
        assert answer.distance_m == 3.0 and second.calls >= 1
    finally:
        await channel.close()
        await runtime.close()


# -- replicas: one stream per replica, none to one that is not SERVING -------------


@contextlib.asynccontextmanager
async def _two_replicas() -> AsyncIterator[tuple[Echoing, Echoing, list[Runtime], PeerChannel]]:
    """Two servers and a channel to both (an `ipv4:` list), closed after the block."""
    first, second = Echoing(), Echoing()
    runtimes = [await _serve(first), await _serve(second)]
    target = peer_target(",".join(f"127.0.0.1:{r.port}" for r in runtimes))
    channel = open_channel(target, _settings("SCAN"), None, SERVICE_TOKEN)
    try:
        yield first, second, runtimes, channel
    finally:
        await channel.close()
        for runtime in runtimes:
            await runtime.close()


async def test_calls_spread_over_replicas_and_avoid_one_not_serving():
    """Two servers behind one channel (an `ipv4:` list): the multiplexed calls
    go to both; once one reports NOT_SERVING (as at shutdown) its stream
    drains and every new call goes to the other, and once it serves again and
    the streams are renewed (max age) calls reach it again."""
    async with _two_replicas() as (first, second, runtimes, channel):
        check_in = channel.multiplexed(CHECK_IN_STREAM, CHECK_IN, max_age_s=0.3)

        async def calls(n: int) -> tuple[int, int]:
            before = (first.calls, second.calls)
            answers = await asyncio.gather(
                *(check_in(_request(f"n-{k}"), timeout=5) for k in range(n))
            )
            assert [a.distance_m for a in answers] == [float(k) for k in range(n)]
            return first.calls - before[0], second.calls - before[1]

        async def spread() -> tuple[int, int]:
            return await calls(40)

        await eventually(spread, until=lambda got: min(got) > 0, what="calls on both replicas")
        await runtimes[1]._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        await asyncio.sleep(0.4)  # past max age: the streams are renewed on the next calls
        await calls(20)
        assert (await calls(100))[1] == 0, "a replica not SERVING was given calls"
        await runtimes[1]._set_health(health_pb2.HealthCheckResponse.SERVING)
        await eventually(spread, until=lambda got: min(got) > 0, what="calls back on both")


async def test_a_killed_replica_costs_no_call():
    """A replica that goes away mid-load: the calls on its stream are sent
    again on the other one; none fails."""
    async with _two_replicas() as (first, second, runtimes, channel):
        check_in = channel.multiplexed(CHECK_IN_STREAM, CHECK_IN, max_age_s=0.3)

        async def both() -> bool:
            await asyncio.gather(*(check_in(_request("n-1"), timeout=5) for _ in range(40)))
            return bool(first.calls and second.calls)

        await eventually(both, what="calls on both replicas")
        load = [asyncio.ensure_future(check_in(_request("slow-50"), timeout=5)) for _ in range(100)]
        await asyncio.sleep(0.02)
        await runtimes[1]._server.stop(0)  # gone at once: its calls in flight are cut
        answers = await asyncio.gather(*load)
        assert [a.distance_m for a in answers] == [50.0] * 100
        assert second.cancelled, "no call was in flight on the replica that went away"
