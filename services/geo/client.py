"""How other services call geo: `GeoClient` implements
services.geo.model.GeoApi (`check_in`, for the scan flow) and `HuntDirectory`
implements `Hunts` (`exists`, for services that must tell an unknown hunt from
one without data: score, the leaderboard). Both return geo's model types and
declare none of their own."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import grpc

from libs.cache import MISSING, SingleFlight, TtlCache
from libs.channels import peer_error
from libs.timestamps import timestamp
from services.geo.model import CheckInAnswer, HuntStatus, TagStatus
from treasure.common.v1 import common_pb2
from treasure.geo.v1 import geo_pb2, geo_pb2_grpc

_TAG = {
    geo_pb2.TAG_STATUS_FOUND: TagStatus.FOUND,
    geo_pb2.TAG_STATUS_UNKNOWN: TagStatus.UNKNOWN,
    geo_pb2.TAG_STATUS_INACTIVE: TagStatus.INACTIVE,
    geo_pb2.TAG_STATUS_UNKNOWN_HUNT: TagStatus.UNKNOWN_HUNT,
}
_HUNT = {
    geo_pb2.HUNT_STATUS_DRAFT: HuntStatus.DRAFT,
    geo_pb2.HUNT_STATUS_PUBLISHED: HuntStatus.PUBLISHED,
    geo_pb2.HUNT_STATUS_CANCELLED: HuntStatus.CANCELLED,
}

log = logging.getLogger(__name__)


CHECK_IN = "/treasure.geo.v1.GeoService/CheckIn"
CHECK_IN_STREAM = "/treasure.geo.v1.GeoService/CheckInStream"


class GeoClient:
    def __init__(
        self, channel: grpc.aio.Channel, timeout_s: float = 1.0, *, multiplexed: bool = False
    ) -> None:
        """`multiplexed`: check-ins go as calls on one CheckInStream (the
        channel must be a libs.channels.PeerChannel), not one CheckIn each."""
        self._stub = geo_pb2_grpc.GeoServiceStub(channel)
        self._check_in = (
            channel.multiplexed(CHECK_IN_STREAM, CHECK_IN) if multiplexed else self._stub.CheckIn
        )
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
    ) -> CheckInAnswer:
        request = geo_pb2.CheckInRequest(
            hunt_id=hunt_id,
            player_id=player_id,
            tag_id=tag_id,
            location=common_pb2.GeoPoint(lat=lat, lon=lon),
            accuracy_m=accuracy_m,
            at=timestamp(at),
        )
        try:
            reply = await self._check_in(request, timeout=timeout_s or self._timeout_s)
        except grpc.aio.AioRpcError as err:
            raise peer_error("geo", err) from err
        found = reply.tag_status in (geo_pb2.TAG_STATUS_FOUND, geo_pb2.TAG_STATUS_INACTIVE)
        hunt = reply.hunt if reply.HasField("hunt") else None
        return CheckInAnswer(
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


class HuntDirectory:
    """Whether a hunt exists, as geo's catalog says (GetHunt), cached in
    process: a hunt found for `found_ttl_s` (hunts are never deleted, only
    cancelled), one not found for `missing_ttl_s` (so a hunt created a moment
    later is seen soon, while a flood of unknown ids costs geo one call per id
    per period). Concurrent lookups of one hunt share one call.

    `exists` answers None when geo cannot say (down, slow, refusing): the
    caller then serves as for an existing hunt rather than failing reads that
    do not need geo to be right."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        timeout_s: float = 0.5,
        found_ttl_s: float = 300.0,
        missing_ttl_s: float = 2.0,
        max_entries: int = 10_000,
    ) -> None:
        self._stub = geo_pb2_grpc.GeoServiceStub(channel)
        self._timeout_s = timeout_s
        self._found: TtlCache[str, bool] = TtlCache(max_entries, found_ttl_s)
        self._missing: TtlCache[str, bool] = TtlCache(max_entries, missing_ttl_s)
        self._flight: SingleFlight[str, bool | None] = SingleFlight()

    async def exists(self, hunt_id: str, timeout_s: float | None = None) -> bool | None:
        """`timeout_s`: at most this long for geo (default: the directory's)."""
        if self._found.get(hunt_id) is not MISSING:
            return True
        if self._missing.get(hunt_id) is not MISSING:
            return False
        timeout = self._timeout_s if timeout_s is None else min(timeout_s, self._timeout_s)
        return await self._flight.do(hunt_id, lambda: self._ask(hunt_id, timeout))

    async def _ask(self, hunt_id: str, timeout_s: float) -> bool | None:
        try:
            await self._stub.GetHunt(geo_pb2.GetHuntRequest(hunt_id=hunt_id), timeout=timeout_s)
        except grpc.aio.AioRpcError as err:
            code = err.code()
            if code is grpc.StatusCode.NOT_FOUND:
                self._missing.put(hunt_id, False)
                return False
            if code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
                # Not an outage: this service's peer token is not accepted by geo's GetHunt.
                log.error("geo refuses GetHunt to this service (%s): check AUTH_PEER_TOKEN", code)
            else:
                log.warning("geo could not say whether hunt %s exists: %s", hunt_id, code)
            return None
        self._found.put(hunt_id, True)
        return True

    async def played(
        self, now: datetime, lead: timedelta, *, limit: int = 1000, timeout_s: float = 5.0
    ) -> list[str]:
        """The published hunts played at `now` or starting within `lead`
        (ListHunts, page by page; at most `limit`), as geo's own warm-up
        chooses them. Raises the peer's error."""
        played: list[str] = []
        token = ""
        while len(played) < limit:
            page = await self._stub.ListHunts(
                geo_pb2.ListHuntsRequest(page_size=100, page_token=token),
                timeout=timeout_s,
                wait_for_ready=True,  # geo may be starting beside us (a whole stack, a rollout)
            )
            for hunt in page.hunts:
                if (
                    hunt.status == geo_pb2.HUNT_STATUS_PUBLISHED
                    and hunt.ends_at.ToDatetime(tzinfo=UTC) > now
                    and hunt.starts_at.ToDatetime(tzinfo=UTC) <= now + lead
                ):
                    self._found.put(hunt.hunt_id, True)
                    played.append(hunt.hunt_id)
            token = page.next_page_token
            if not token:
                break
        return played[:limit]
