"""The server bootstrap every service shares: auth, error mapping, health,
reflection, trace-id trailer and graceful shutdown, on a real grpc.aio server."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import logging
import signal
import threading
import time

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from libs.config import Env, ServiceSettings
from libs.errors import Unavailable
from libs.logs import JsonFormatter
from libs.server import Runtime
from tests.support.env import ADMIN_TOKEN, CLIENT_TOKEN, SERVICE_TOKEN, bearer
from tests.support.fakes import FakeGeo, geo_binding
from tests.support.rpcerrors import error_info, retry_info
from tests.support.services import wait_serving
from tools.inprocess import service_env
from tools.stack import spawn
from treasure.geo.v1 import geo_pb2, geo_pb2_grpc


def settings() -> ServiceSettings:
    env = Env(service_env("GEO"))
    result = ServiceSettings.read(env, "GEO", 0, 0)
    env.finish()
    return result


@pytest.fixture
async def served():
    servicer = FakeGeo()
    runtime = Runtime("geo", settings())
    binding = geo_binding(servicer)
    port = await runtime.serve(binding)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield runtime, servicer, channel
    servicer.release.set()
    await channel.close()
    await runtime.close()


@pytest.fixture
def log_lines():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("treasure-test"))
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.DEBUG)
    yield stream
    root.removeHandler(handler)
    root.setLevel(old_level)


async def _code(call) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


async def test_auth_statuses(served, log_lines):
    _, _, channel = served
    stub = geo_pb2_grpc.GeoServiceStub(channel)
    request = geo_pb2.CheckInRequest()
    assert await _code(stub.CheckIn(request)) == grpc.StatusCode.UNAUTHENTICATED
    assert (
        await _code(stub.CheckIn(request, metadata=bearer("wrong-token")))
        == grpc.StatusCode.UNAUTHENTICATED
    )
    assert (
        await _code(stub.CheckIn(request, metadata=(("authorization", "Basic x"),)))
        == grpc.StatusCode.UNAUTHENTICATED
    )
    assert (
        await _code(stub.CheckIn(request, metadata=bearer(CLIENT_TOKEN)))
        == grpc.StatusCode.PERMISSION_DENIED
    )
    assert (
        await _code(stub.CheckIn(request, metadata=bearer(ADMIN_TOKEN)))
        == grpc.StatusCode.PERMISSION_DENIED
    )
    assert await _code(stub.CheckIn(request, metadata=bearer(SERVICE_TOKEN))) == grpc.StatusCode.OK
    assert await _code(stub.PutTile(geo_pb2.PutTileRequest(), metadata=bearer(CLIENT_TOKEN))) == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    # An unexpected exception is INTERNAL, logged with the trace id, and leaks nothing.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ListHunts(geo_pb2.ListHuntsRequest(), metadata=bearer(CLIENT_TOKEN))
    assert err.value.code() == grpc.StatusCode.INTERNAL and "boom" not in (
        err.value.details() or ""
    )
    logged = log_lines.getvalue()
    assert "unhandled error" in logged and '"trace_id"' in logged
    for token in ("wrong-token", SERVICE_TOKEN, ADMIN_TOKEN):
        assert token not in logged


async def test_domain_errors_become_statuses_with_details(served):
    _, _, channel = served
    stub = geo_pb2_grpc.GeoServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreateHunt(geo_pb2.CreateHuntRequest(), metadata=bearer(ADMIN_TOKEN))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "hunt.name: is required"
    trailers = dict(err.value.trailing_metadata())
    status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    bad = error_details_pb2.BadRequest()
    assert any(d.Unpack(bad) for d in status.details)
    assert bad.field_violations[0].field == "hunt.name"
    assert len(trailers["x-trace-id"]) == 32


async def test_trace_id_trailer_on_success(served):
    _, _, channel = served
    call = geo_pb2_grpc.GeoServiceStub(channel).CheckIn(
        geo_pb2.CheckInRequest(), metadata=bearer(SERVICE_TOKEN)
    )
    await call
    trailers = dict(await call.trailing_metadata())
    assert len(trailers["x-trace-id"]) == 32 and int(trailers["x-trace-id"], 16) != 0


async def test_health_and_reflection_need_no_token(served):
    runtime, _, channel = served
    health = health_pb2_grpc.HealthStub(channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(service="treasure.geo.v1.GeoService"))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    names = [s.name async for r in responses for s in r.list_services_response.service]
    assert "treasure.geo.v1.GeoService" in names and "grpc.health.v1.Health" in names


async def test_graceful_shutdown_finishes_in_flight_calls(served):
    runtime, servicer, channel = served
    stub = geo_pb2_grpc.GeoServiceStub(channel)
    health = health_pb2_grpc.HealthStub(channel)
    watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
    assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
    in_flight = asyncio.ensure_future(
        stub.GetHunt(geo_pb2.GetHuntRequest(hunt_id="h1"), metadata=bearer(CLIENT_TOKEN))
    )
    await servicer.entered.wait()
    closing = asyncio.ensure_future(runtime.close())
    assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
    servicer.release.set()
    reply = await in_flight
    assert reply.hunt.hunt_id == "h1"
    await closing


async def test_sigterm_on_a_real_process_exits_0(tmp_path, pg_dsn, redis_urls):
    env = service_env("GEO", GEO_PG_DSN=pg_dsn, GEO_REDIS_URL=redis_urls["geo"])
    from tools.localinfra import free_port

    port = free_port()
    env["GEO_GRPC_LISTEN"] = f"127.0.0.1:{port}"
    process = spawn("geo", env, tmp_path / "geo.log")
    try:
        await wait_serving(f"127.0.0.1:{port}")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(service="")
            )
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
            process.send_signal(signal.SIGTERM)
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
        code = await asyncio.to_thread(process.wait, 30)
    finally:
        if process.poll() is None:
            process.kill()
    assert code == 0, (tmp_path / "geo.log").read_text()
    assert '"msg": "shutting down"' in (tmp_path / "geo.log").read_text()


async def test_a_gate_refuses_before_the_servicer_with_its_status_and_retry_hint():
    """A method's gate (libs.rpc.Gate) refuses on a real server: the status,
    reason and retry hint of its error, the servicer never called, the same
    answer for every refusal; a caller the token does not admit is told so
    whatever the gate says; a call the gate lets through is served."""
    servicer = FakeGeo()
    refused = Unavailable("busy", retry_after_s=0.25, reason="TEST_OVERLOADED")
    seen: list[float | None] = []
    closed = [True]

    def gate(request, time_left):
        seen.append(time_left)
        return refused if closed[0] else None

    runtime = Runtime("geo", settings())
    port = await runtime.serve(geo_binding(servicer, gates={"CheckIn": gate}))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = geo_pb2_grpc.GeoServiceStub(channel)
            request = geo_pb2.CheckInRequest()
            for _ in range(3):
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stub.CheckIn(request, metadata=bearer(SERVICE_TOKEN), timeout=5)
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE
                assert err.value.details() == "busy"
                assert error_info(err.value).reason == "TEST_OVERLOADED"
                hint = retry_info(err.value)
                assert hint is not None and hint.retry_delay.ToTimedelta().total_seconds() == 0.25
            assert servicer.check_ins == 0
            assert len(seen) == 3 and all(
                left is not None and 0 < left <= 5.1 for left in seen
            )  # rounded on the wire
            assert await _code(stub.CheckIn(request)) == grpc.StatusCode.UNAUTHENTICATED
            assert len(seen) == 3  # not asked for a caller the token does not admit
            closed[0] = False
            assert await _code(stub.CheckIn(request, metadata=bearer(SERVICE_TOKEN))) == (
                grpc.StatusCode.OK
            )
            assert servicer.check_ins == 1
    finally:
        servicer.release.set()
        await runtime.close()


async def test_past_its_pending_bound_grpc_core_drops_new_calls_unread():
    """`<SVC>_GRPC_MAX_PENDING` on a real server: while the process's event
    loop is busy (here: a gate that blocks it), gRPC's core holds at most
    twice the bound of calls not yet taken and drops the rest at once,
    CANCELLED, without the process seeing them; the held ones are served
    (here: refused by the gate) once the loop is free."""
    seen: list[float] = []
    blocked = threading.Event()
    freed_at: list[float] = []

    def gate(request, time_left):
        seen.append(time.monotonic())
        if len(seen) == 1:
            blocked.set()
            time.sleep(1.0)  # the loop takes no call for a second
            freed_at.append(time.monotonic())
        return Unavailable("busy", retry_after_s=0.1, reason="TEST_OVERLOADED")

    servicer = FakeGeo()
    acceptors = 3  # requests core holds besides grpc.aio's own (libs.acceptors)
    runtime = Runtime(
        "geo", dataclasses.replace(settings(), grpc_max_pending=2, grpc_acceptors=acceptors)
    )
    port = await runtime.serve(geo_binding(servicer, gates={"CheckIn": gate}))

    def calls() -> list[tuple[grpc.StatusCode, float]]:
        """From a thread of its own (the server's loop is the one blocked)."""
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = geo_pb2_grpc.GeoServiceStub(channel)
            metadata = bearer(SERVICE_TOKEN)
            first = stub.CheckIn.future(geo_pb2.CheckInRequest(), metadata=metadata, timeout=10)
            assert blocked.wait(5)
            ended: list[tuple[grpc.StatusCode, float]] = []
            futures = [
                stub.CheckIn.future(geo_pb2.CheckInRequest(), metadata=metadata, timeout=10)
                for _ in range(30)
            ]
            for future in futures:
                future.add_done_callback(lambda f: ended.append((f.code(), time.monotonic())))
            for future in [first, *futures]:
                future.exception()  # waits for it
            return ended

    try:
        ended = await asyncio.to_thread(calls)
    finally:
        await runtime.close()
    dropped = [at for code, at in ended if code == grpc.StatusCode.CANCELLED]
    refused = [at for code, at in ended if code == grpc.StatusCode.UNAVAILABLE]
    assert len(dropped) + len(refused) == 30, ended
    # Held by core: at most the hard bound (twice 2), and the calls matched to
    # the requests outstanding when the loop blocked (grpc.aio's and the acceptors').
    held = 2 * 2 + 1 + acceptors
    assert len(refused) <= held and len(seen) <= held + 1, (len(refused), len(seen))
    assert len(refused) >= acceptors  # each acceptor's request was matched to a call
    assert all(at < freed_at[0] for at in dropped)  # answered while the loop was blocked
    assert servicer.check_ins == 0
