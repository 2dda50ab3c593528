"""Building scans as a mobile client sends them: unique ids and a
SubmitScanRequest for a checkpoint (tests.support.hunts.Spot)."""

from __future__ import annotations

import uuid
from datetime import datetime

from libs.timestamps import timestamp
from tests.support.hunts import Spot
from treasure.common.v1 import common_pb2
from treasure.scan.v1 import scan_pb2


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def request(player: str, hunt: str, spot: Spot, *, at: datetime, client_scan_id: str | None = None,
            where: tuple[float, float] | None = None, accuracy: float = 5.0) -> scan_pb2.SubmitScanRequest:  # fmt: skip
    """A scan of `spot`'s tag at `at`, from the spot itself unless `where`."""
    lat, lon = where or (spot.lat, spot.lon)
    return scan_pb2.SubmitScanRequest(
        player_id=player,
        hunt_id=hunt,
        tag_id=spot.tag_id,
        location=common_pb2.GeoPoint(lat=lat, lon=lon),
        accuracy_m=accuracy,
        scanned_at=timestamp(at),
        client_scan_id=client_scan_id or unique("c"),
    )
