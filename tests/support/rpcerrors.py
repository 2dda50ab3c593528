"""Reading a failed call as a client would: the status it ended with and the
google.rpc details it carries (ErrorInfo, BadRequest, RetryInfo)."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

import grpc
import pytest
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

M = TypeVar("M", bound=Message)


async def refused(call: Awaitable[object]) -> grpc.aio.AioRpcError:
    """The error `call` ends with; fails the test when it succeeds."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


def detail(err: grpc.aio.AioRpcError, kind: type[M]) -> M | None:
    """The first detail of type `kind` the error carries, or None."""
    raw = dict(err.trailing_metadata() or ()).get("grpc-status-details-bin")
    if raw is None:
        return None
    found = kind()
    for item in status_pb2.Status.FromString(raw).details:
        if item.Unpack(found):
            return found
    return None


def error_info(err: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    """The ErrorInfo detail; fails the test when the error carries none."""
    info = detail(err, error_details_pb2.ErrorInfo)
    if info is None:
        raise AssertionError(f"no ErrorInfo in {err.code()}: {err.details()}")
    return info


def bad_fields(err: grpc.aio.AioRpcError) -> list[str]:
    """The fields named by the BadRequest detail (empty without one)."""
    request = detail(err, error_details_pb2.BadRequest)
    return [v.field for v in request.field_violations] if request is not None else []


def retry_info(err: grpc.aio.AioRpcError) -> error_details_pb2.RetryInfo | None:
    return detail(err, error_details_pb2.RetryInfo)
