"""Reading the google.rpc details of a failed call, as a client would."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2, status_pb2


def _status(err: grpc.aio.AioRpcError) -> status_pb2.Status | None:
    raw = dict(err.trailing_metadata() or ()).get("grpc-status-details-bin")
    return status_pb2.Status.FromString(raw) if raw is not None else None


def error_info(err: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    """The ErrorInfo detail; fails the test when the error carries none."""
    status = _status(err)
    info = error_details_pb2.ErrorInfo()
    for detail in status.details if status is not None else ():
        if detail.Unpack(info):
            return info
    raise AssertionError(f"no ErrorInfo in {err.code()}: {err.details()}")


def bad_fields(err: grpc.aio.AioRpcError) -> list[str]:
    """The fields named by the BadRequest detail (empty without one)."""
    status = _status(err)
    request = error_details_pb2.BadRequest()
    for detail in status.details if status is not None else ():
        if detail.Unpack(request):
            return [v.field for v in request.field_violations]
    return []
