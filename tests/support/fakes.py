"""Servicer doubles for transport tests (bootstrap, TLS): they answer without
any store, so only the server plumbing around them is under test."""

from __future__ import annotations

import asyncio

from libs.errors import InvalidArgument
from libs.server import Binding
from services.geo.server import MULTIPLEXED, ROLES
from tests.support.env import CLIENT_TOKEN
from treasure.geo.v1 import geo_pb2, geo_pb2_grpc


class FakeGeo(geo_pb2_grpc.GeoServiceServicer):
    """Only the transport is under test here; the real geo has its own tests."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.entered = asyncio.Event()
        self.check_ins = 0

    async def CheckIn(self, request, context):
        self.check_ins += 1
        return geo_pb2.CheckInResponse(distance_m=1.0)

    async def GetHunt(self, request, context):  # a slow call, for shutdown
        self.entered.set()
        await self.release.wait()
        return geo_pb2.GetHuntResponse(hunt=geo_pb2.Hunt(hunt_id=request.hunt_id))

    async def CreateHunt(self, request, context):
        raise InvalidArgument("hunt.name", "is required")

    async def ListHunts(self, request, context):
        raise RuntimeError(f"boom with {CLIENT_TOKEN} inside")


def geo_binding(servicer: geo_pb2_grpc.GeoServiceServicer, **options) -> Binding:
    """The geo service's binding (its roles and multiplexed methods) around
    `servicer`; `options`: more Binding fields, such as `gates`."""
    return Binding(
        geo_pb2.DESCRIPTOR.services_by_name["GeoService"],
        geo_pb2_grpc.add_GeoServiceServicer_to_server,
        servicer,
        ROLES,
        multiplexed=MULTIPLEXED,
        **options,
    )
