"""The gRPC face of the scan service: validate, call the flow, map."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc

from libs import paging, validate
from libs.auth import PUBLIC
from libs.deadlines import Budget
from libs.errors import InvalidArgument
from libs.server import Binding
from libs.timestamps import timestamp
from services.scan.model import Answer, Outcome, ScanInput, ScanRecord, Status
from services.scan.service import ScanFlow
from treasure.common.v1 import common_pb2
from treasure.scan.v1 import scan_pb2, scan_pb2_grpc

#: The roles each RPC accepts (libs.auth); every RPC must be listed.
ROLES = {
    "SubmitScan": PUBLIC,
    "GetScan": PUBLIC,
    "ListPlayerScans": PUBLIC,
}

_OUTCOME = {
    Outcome.UNLOCKED: scan_pb2.SCAN_OUTCOME_UNLOCKED,
    Outcome.ALREADY_UNLOCKED: scan_pb2.SCAN_OUTCOME_ALREADY_UNLOCKED,
    Outcome.OUT_OF_RANGE: scan_pb2.SCAN_OUTCOME_OUT_OF_RANGE,
    Outcome.UNKNOWN_TAG: scan_pb2.SCAN_OUTCOME_UNKNOWN_TAG,
    Outcome.HUNT_NOT_ACTIVE: scan_pb2.SCAN_OUTCOME_HUNT_NOT_ACTIVE,
    Outcome.IMPLAUSIBLE_SPEED: scan_pb2.SCAN_OUTCOME_IMPLAUSIBLE_SPEED,
    Outcome.UNKNOWN_HUNT: scan_pb2.SCAN_OUTCOME_UNKNOWN_HUNT,
}
_STATUS = {
    Status.RECEIVED: scan_pb2.SCAN_STATUS_RECEIVED,
    Status.APPLIED: scan_pb2.SCAN_STATUS_APPLIED,
}

MAX_AHEAD = timedelta(seconds=30)


def _answer_fields(answer: Answer) -> dict:
    return {
        "scan_id": answer.scan_id,
        "outcome": _OUTCOME.get(answer.outcome, scan_pb2.SCAN_OUTCOME_UNSPECIFIED)
        if answer.outcome
        else 0,
        "points_awarded": answer.points_awarded,
        "total_points": answer.total_points,
        "checkpoint_id": answer.checkpoint_id,
        "checkpoint_name": answer.checkpoint_name,
        "first_finder": answer.first_finder,
        "status": _STATUS[answer.status],
    }


def _scan(record: ScanRecord) -> scan_pb2.Scan:
    """A recorded scan; without `location` (and `accuracy_m` 0) once its
    location was purged (services.scan.purge)."""
    scan = record.input
    message = scan_pb2.Scan(
        player_id=scan.player_id,
        hunt_id=scan.hunt_id,
        tag_id=scan.tag_id,
        scanned_at=timestamp(scan.scanned_at),
        client_scan_id=scan.client_scan_id,
        received_at=timestamp(record.received_at),
        **_answer_fields(record.answer),
    )
    if scan.lat is not None and scan.lon is not None:
        message.location.CopyFrom(common_pb2.GeoPoint(lat=scan.lat, lon=scan.lon))
        message.accuracy_m = scan.accuracy_m or 0.0
    if record.applied_at is not None:
        message.applied_at.CopyFrom(timestamp(record.applied_at))
    return message


class ScanServicer(scan_pb2_grpc.ScanServiceServicer):
    def __init__(self, flow: ScanFlow, *, max_scan_age: timedelta) -> None:
        self._flow = flow
        self._max_age = max_scan_age

    async def SubmitScan(
        self, request: scan_pb2.SubmitScanRequest, context: grpc.aio.ServicerContext
    ):
        lat, lon = validate.require_point(
            "location", request.location, request.HasField("location")
        )
        now = datetime.now(UTC)
        scan = ScanInput(
            player_id=validate.require_id("player_id", request.player_id),
            hunt_id=validate.require_id("hunt_id", request.hunt_id),
            tag_id=validate.require_id("tag_id", request.tag_id),
            lat=lat,
            lon=lon,
            accuracy_m=validate.require_number(
                "accuracy_m", request.accuracy_m, low=0.0, high=100_000.0
            ),
            scanned_at=validate.require_time(
                "scanned_at",
                request.scanned_at,
                request.HasField("scanned_at"),
                now=now,
                max_ahead=MAX_AHEAD,
            ),
            client_scan_id=validate.require_id("client_scan_id", request.client_scan_id),
        )
        if scan.scanned_at < now - self._max_age:
            # Too old for a new scan, but a late retry of a recorded one gets its answer.
            too_old = InvalidArgument(
                "scanned_at", f"is older than {self._max_age.total_seconds():g}s"
            )
            answer = await self._flow.replay(scan, too_old)
        else:
            answer = await self._flow.submit(scan, Budget.of(context))
        return scan_pb2.SubmitScanResponse(hunt_id=scan.hunt_id, **_answer_fields(answer))

    def refusal(self, request: scan_pb2.SubmitScanRequest, time_left: float | None):
        """SubmitScan's gate (libs.rpc.Gate): refused at once, before the
        request is even validated, when the flow cannot take a new scan."""
        return self._flow.refusal(
            (request.player_id, request.hunt_id, request.client_scan_id), time_left
        )

    async def GetScan(self, request: scan_pb2.GetScanRequest, context: grpc.aio.ServicerContext):
        record = await self._flow.get(validate.require_id("scan_id", request.scan_id))
        return scan_pb2.GetScanResponse(scan=_scan(record))

    async def ListPlayerScans(
        self, request: scan_pb2.ListPlayerScansRequest, context: grpc.aio.ServicerContext
    ):
        player_id = validate.require_id("player_id", request.player_id)
        hunt_id = validate.optional_id("hunt_id", request.hunt_id)
        size = validate.page_size("page_size", request.page_size, default=20, maximum=100)
        cursor = paging.decode(request.page_token, keys=("before",))
        before = validate.require_id("page_token", cursor["before"]) if cursor else ""
        records = await self._flow.list_player(player_id, hunt_id, before, size + 1)
        response = scan_pb2.ListPlayerScansResponse(scans=[_scan(r) for r in records[:size]])
        if len(records) > size:
            response.next_page_token = paging.encode({"before": records[size - 1].scan_id})
        return response


def binding(servicer: ScanServicer) -> Binding:
    return Binding(
        descriptor=scan_pb2.DESCRIPTOR.services_by_name["ScanService"],
        add_to_server=scan_pb2_grpc.add_ScanServiceServicer_to_server,
        servicer=servicer,
        roles=ROLES,
        gates={"SubmitScan": servicer.refusal},
    )
