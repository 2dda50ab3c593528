"""Building hunts for tests through geo's admin RPCs (as an operator would)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from libs.timestamps import timestamp
from tests.support.env import ADMIN_TOKEN, bearer
from treasure.common.v1 import common_pb2
from treasure.geo.v1 import geo_pb2

ADMIN = bearer(ADMIN_TOKEN)
LISBON = (38.7139, -9.1394)  # Rossio


@dataclass(frozen=True)
class Spot:
    checkpoint_id: str
    tag_id: str
    lat: float
    lon: float
    points: int
    bonus: int
    radius_m: float = 30.0


def offset(lat: float, lon: float, north_m: float, east_m: float) -> tuple[float, float]:
    return lat + north_m / 111_195.0, lon + east_m / (111_195.0 * math.cos(math.radians(lat)))


def spots(hunt_id: str, count: int, spacing_m: float = 150.0) -> list[Spot]:
    """`count` checkpoints in a row going east from Rossio, `spacing_m` apart."""
    return [
        Spot(
            f"cp{i}",
            f"{hunt_id}-tag{i}",
            *offset(*LISBON, 0.0, i * spacing_m),
            points=10 * (i + 1),
            bonus=5,
        )
        for i in range(count)
    ]


async def create_hunt(
    geo,
    hunt_id: str,
    checkpoints: list[Spot],
    *,
    status: int = geo_pb2.HUNT_STATUS_PUBLISHED,
    starts_in_s: float = -3600,
) -> None:
    now = datetime.now(UTC)
    hunt = geo_pb2.Hunt(
        hunt_id=hunt_id,
        name=f"Hunt {hunt_id}",
        starts_at=timestamp(now + timedelta(seconds=starts_in_s)),
        ends_at=timestamp(now + timedelta(days=1)),
        status=status,
        grid=geo_pb2.TileGrid(
            origin=common_pb2.GeoPoint(lat=LISBON[0] - 0.01, lon=LISBON[1] - 0.01),
            tile_size_m=250,
            columns=20,
            rows=20,
        ),
    )
    await geo.CreateHunt(geo_pb2.CreateHuntRequest(hunt=hunt), metadata=ADMIN, timeout=5)
    for spot in checkpoints:
        await geo.UpsertCheckpoint(
            geo_pb2.UpsertCheckpointRequest(
                checkpoint=geo_pb2.Checkpoint(
                    checkpoint_id=spot.checkpoint_id,
                    hunt_id=hunt_id,
                    tag_id=spot.tag_id,
                    name=f"Checkpoint {spot.checkpoint_id}",
                    location=common_pb2.GeoPoint(lat=spot.lat, lon=spot.lon),
                    radius_m=spot.radius_m,
                    points=spot.points,
                    first_finder_bonus=spot.bonus,
                )
            ),
            metadata=ADMIN,
            timeout=5,
        )
