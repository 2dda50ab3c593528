"""How other services call geo: `GeoClient.check_in` for the scan flow."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc

from libs.channels import peer_error
from libs.timestamps import timestamp
from treasure.common.v1 import common_pb2
from treasure.geo.v1 import geo_pb2, geo_pb2_grpc


class TagStatus(enum.StrEnum):
    FOUND = "found"
    UNKNOWN = "unknown"
    INACTIVE = "inactive"


class HuntStatus(enum.StrEnum):
    DRAFT = "draft"
    PUBLISHED = "published"
    CANCELLED = "cancelled"


_TAG = {
    geo_pb2.TAG_STATUS_FOUND: TagStatus.FOUND,
    geo_pb2.TAG_STATUS_UNKNOWN: TagStatus.UNKNOWN,
    geo_pb2.TAG_STATUS_INACTIVE: TagStatus.INACTIVE,
}
_HUNT = {
    geo_pb2.HUNT_STATUS_DRAFT: HuntStatus.DRAFT,
    geo_pb2.HUNT_STATUS_PUBLISHED: HuntStatus.PUBLISHED,
    geo_pb2.HUNT_STATUS_CANCELLED: HuntStatus.CANCELLED,
}


@dataclass(frozen=True)
class CheckInResult:
    """What geo says about a scanned tag. Checkpoint and hunt fields are empty
    when the tag is UNKNOWN."""

    tag_status: TagStatus
    checkpoint_id: str
    checkpoint_name: str
    points: int
    first_finder_bonus: int
    hunt_status: HuntStatus | None
    hunt_starts_at: datetime | None
    hunt_ends_at: datetime | None
    distance_m: float
    allowed_m: float
    in_range: bool

    def hunt_active_at(self, at: datetime) -> bool:
        return (
            self.hunt_status is HuntStatus.PUBLISHED
            and self.hunt_starts_at is not None
            and self.hunt_ends_at is not None
            and self.hunt_starts_at <= at < self.hunt_ends_at
        )


class GeoClient:
    def __init__(self, channel: grpc.aio.Channel, timeout_s: float = 1.0) -> None:
        self._stub = geo_pb2_grpc.GeoServiceStub(channel)
        self._timeout_s = timeout_s

    async def check_in(
        self,
        *,
        hunt_id: str,
        player_id: str,
        tag_id: str,
        lat: float,
        lon: float,
        accuracy_m: float,
        at: datetime,
        timeout_s: float | None = None,
    ) -> CheckInResult:
        request = geo_pb2.CheckInRequest(
            hunt_id=hunt_id,
            player_id=player_id,
            tag_id=tag_id,
            location=common_pb2.GeoPoint(lat=lat, lon=lon),
            accuracy_m=accuracy_m,
            at=timestamp(at),
        )
        try:
            reply = await self._stub.CheckIn(request, timeout=timeout_s or self._timeout_s)
        except grpc.aio.AioRpcError as err:
            raise peer_error("geo", err) from err
        found = reply.tag_status != geo_pb2.TAG_STATUS_UNKNOWN
        hunt = reply.hunt if reply.HasField("hunt") else None
        return CheckInResult(
            tag_status=_TAG.get(reply.tag_status, TagStatus.UNKNOWN),
            checkpoint_id=reply.checkpoint.checkpoint_id if found else "",
            checkpoint_name=reply.checkpoint.name if found else "",
            points=reply.checkpoint.points if found else 0,
            first_finder_bonus=reply.checkpoint.first_finder_bonus if found else 0,
            hunt_status=_HUNT.get(hunt.status) if hunt is not None else None,
            hunt_starts_at=hunt.starts_at.ToDatetime(tzinfo=UTC)
            if hunt and hunt.HasField("starts_at")
            else None,
            hunt_ends_at=hunt.ends_at.ToDatetime(tzinfo=UTC)
            if hunt and hunt.HasField("ends_at")
            else None,
            distance_m=reply.distance_m,
            allowed_m=reply.allowed_m,
            in_range=reply.in_range,
        )
