"""libs.acceptors on a real grpc.aio server: calls taken by the extra accept
loops are served as gRPC's own loop serves them (status mapping, deadlines,
cancellation), shutdown ends the loops and lets calls in flight finish, and
a grpc.aio without the private API serves with its own loop alone."""

from __future__ import annotations

import asyncio
import dataclasses

import grpc
import pytest

from libs import acceptors as acceptors_module
from libs.server import Runtime
from tests.integration.test_bootstrap import settings
from tests.support.env import SERVICE_TOKEN, bearer
from tests.support.fakes import FakeGeo, geo_binding
from tests.support.polling import eventually
from treasure.geo.v1 import geo_pb2, geo_pb2_grpc

ACCEPTORS = 4


class SlowGeo(FakeGeo):
    """GetHunt waits for `release`, counting the calls that started and the
    ones cancelled while waiting."""

    def __init__(self) -> None:
        super().__init__()
        self.started = 0
        self.cancelled = 0

    async def GetHunt(self, request, context):
        self.started += 1
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return geo_pb2.GetHuntResponse(hunt=geo_pb2.Hunt(hunt_id=request.hunt_id))


@pytest.fixture
async def served():
    servicer = SlowGeo()
    runtime = Runtime("geo", dataclasses.replace(settings(), grpc_acceptors=ACCEPTORS))
    port = await runtime.serve(geo_binding(servicer))
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield runtime, servicer, geo_pb2_grpc.GeoServiceStub(channel)
    servicer.release.set()
    await channel.close()
    await runtime.close()


async def test_calls_taken_by_the_acceptors_are_served_like_any(served):
    runtime, servicer, stub = served
    methods = geo_pb2.DESCRIPTOR.services_by_name["GeoService"].methods
    assert runtime.acceptors is not None and runtime.acceptors.running == len(methods) * ACCEPTORS
    exported = runtime.metrics.registry.get_sample_value("grpc_accept_loops")
    assert exported == len(methods) * ACCEPTORS
    replies = await asyncio.gather(
        *(
            stub.CheckIn(geo_pb2.CheckInRequest(), metadata=bearer(SERVICE_TOKEN), timeout=5)
            for _ in range(60)
        ),
        return_exceptions=True,
    )
    assert all(isinstance(r, geo_pb2.CheckInResponse) for r in replies), replies[:3]
    assert servicer.check_ins == 60
    assert runtime.acceptors.taken > 0  # some of them came through the extra loops
    # The wrapper's mapping holds for them too: no token, no call.
    refused = await asyncio.gather(
        *(stub.CheckIn(geo_pb2.CheckInRequest(), timeout=5) for _ in range(20)),
        return_exceptions=True,
    )
    assert {e.code() for e in refused} == {grpc.StatusCode.UNAUTHENTICATED}
    assert servicer.check_ins == 60


async def test_a_caller_giving_up_cancels_the_handler(served):
    runtime, servicer, stub = served
    taken = runtime.acceptors.taken
    calls = [
        stub.GetHunt(
            geo_pb2.GetHuntRequest(hunt_id=f"h{n}"), metadata=bearer(SERVICE_TOKEN), timeout=0.5
        )
        for n in range(20)
    ]
    codes = await asyncio.gather(*calls, return_exceptions=True)
    assert {c.code() for c in codes} == {grpc.StatusCode.DEADLINE_EXCEEDED}
    await eventually(lambda: servicer.cancelled == 20, timeout_s=5)
    assert servicer.started == 20
    assert runtime.acceptors.taken > taken


async def test_stop_lets_calls_in_flight_finish_and_ends_the_loops(served):
    runtime, servicer, stub = served
    in_flight = [
        asyncio.ensure_future(
            stub.GetHunt(
                geo_pb2.GetHuntRequest(hunt_id=f"h{n}"), metadata=bearer(SERVICE_TOKEN), timeout=10
            )
        )
        for n in range(10)
    ]
    await eventually(lambda: servicer.started == 10, timeout_s=5)
    acceptors = runtime.acceptors
    closing = asyncio.ensure_future(runtime.close())
    await asyncio.sleep(0.2)
    servicer.release.set()
    replies = await asyncio.gather(*in_flight)
    assert [r.hunt.hunt_id for r in replies] == [f"h{n}" for n in range(10)]
    await asyncio.wait_for(closing, timeout=settings().shutdown_grace_s)
    assert acceptors.running == 0
    assert servicer.cancelled == 0


async def test_without_the_private_api_grpcs_own_loop_serves(monkeypatch):
    monkeypatch.setattr(acceptors_module, "_PRIVATE", False)
    servicer = FakeGeo()
    runtime = Runtime("geo", dataclasses.replace(settings(), grpc_acceptors=ACCEPTORS))
    port = await runtime.serve(geo_binding(servicer))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = geo_pb2_grpc.GeoServiceStub(channel)
            await asyncio.gather(
                *(
                    stub.CheckIn(
                        geo_pb2.CheckInRequest(), metadata=bearer(SERVICE_TOKEN), timeout=5
                    )
                    for _ in range(20)
                )
            )
        assert servicer.check_ins == 20
        assert runtime.acceptors.running == 0 and runtime.acceptors.taken == 0
        assert runtime.metrics.registry.get_sample_value("grpc_accept_loops") == 0
    finally:
        await runtime.close()
