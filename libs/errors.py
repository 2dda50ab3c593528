"""Kinds of failure a service raises, independent of the transport.

Services raise these (or subclasses with their own names); `libs.rpc` turns
them into canonical gRPC status codes with `google.rpc` details at the edge.
Each carries a stable `reason` for clients that must branch on the cause.
"""

from __future__ import annotations

from collections.abc import Mapping


class ServiceError(Exception):
    """Base of every error a service reports to its caller. `metadata`: facts
    a client may act on (google.rpc.ErrorInfo's metadata), e.g. the id of the
    scan that holds a reused idempotency key."""

    reason: str = "ERROR"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.metadata: dict[str, str] = dict(metadata or {})
        if reason is not None:
            self.reason = reason


class InvalidArgument(ServiceError):
    """A request field breaks its rule. `field` names it (dotted path)."""

    reason = "INVALID_FIELD"

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class NotFound(ServiceError):
    reason = "NOT_FOUND"


class AlreadyExists(ServiceError):
    reason = "ALREADY_EXISTS"


class FailedPrecondition(ServiceError):
    reason = "FAILED_PRECONDITION"


class ResourceExhausted(ServiceError):
    """Too much of something; retry after `retry_after_s` seconds when set."""

    reason = "RESOURCE_EXHAUSTED"

    def __init__(
        self,
        message: str,
        *,
        retry_after_s: float | None = None,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.retry_after_s = retry_after_s


class Unavailable(ServiceError):
    """A dependency or state is not ready; retry after `retry_after_s` when set."""

    reason = "UNAVAILABLE"

    def __init__(
        self,
        message: str,
        *,
        retry_after_s: float | None = None,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.retry_after_s = retry_after_s


class DeadlineExceeded(ServiceError):
    """The caller's deadline leaves too little time to do the work: it is
    refused before any of it is done."""

    reason = "DEADLINE_TOO_SHORT"
