"""A real gRPC GeoService double that answers GetHunt only, for score and the
leaderboard in process (they ask geo's catalog whether a hunt exists)."""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractAsyncContextManager

import grpc

from tests.support.doubles import serve
from treasure.geo.v1 import geo_pb2, geo_pb2_grpc


class FakeCatalog(geo_pb2_grpc.GeoServiceServicer):
    """GetHunt finds the hunts in `hunts` (every hunt when None); `asked`
    counts the calls, so a test can see the caller's cache at work."""

    def __init__(self, hunts: Iterable[str] | None = None) -> None:
        self.hunts = None if hunts is None else set(hunts)
        self.asked = 0

    async def GetHunt(self, request, context):
        self.asked += 1
        if self.hunts is not None and request.hunt_id not in self.hunts:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"hunt {request.hunt_id} not found")
        return geo_pb2.GetHuntResponse(hunt=geo_pb2.Hunt(hunt_id=request.hunt_id))


def serve_catalog(catalog: FakeCatalog | None = None) -> AbstractAsyncContextManager[str]:
    """The double (every hunt exists unless given one) on a free port; yields its address."""
    return serve(geo_pb2_grpc.add_GeoServiceServicer_to_server, catalog or FakeCatalog())
