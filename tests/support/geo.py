"""Geo for tests: a movable clock for `tools.inprocess.geo_service`, and
catalog entries created through its admin stub (the service in process and
the entries' builders are in tools/inprocess.py)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import grpc

from tools.inprocess import Geo, checkpoint_message, hunt_message
from treasure.geo.v1 import geo_pb2


class FakeClock:
    """Unix seconds that move only when told (starts at the real time, or `start`)."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def datetime(self) -> datetime:
        return datetime.fromtimestamp(self.now, UTC)


async def create_hunt(geo: Geo, hunt_id: str = "h1", **kwargs: Any) -> geo_pb2.Hunt:
    reply = await geo.admin.CreateHunt(
        geo_pb2.CreateHuntRequest(hunt=hunt_message(hunt_id, **kwargs))
    )
    return reply.hunt


async def upsert_checkpoint(
    geo: Geo, checkpoint_id: str = "c1", **kwargs: Any
) -> geo_pb2.Checkpoint:
    reply = await geo.admin.UpsertCheckpoint(
        geo_pb2.UpsertCheckpointRequest(checkpoint=checkpoint_message(checkpoint_id, **kwargs))
    )
    return reply.checkpoint


async def status_of(call) -> grpc.StatusCode:
    """The status code a call ends with."""
    try:
        await call
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK
