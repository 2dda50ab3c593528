"""The one server interceptor every service runs behind OpenTelemetry's.

Per call it: checks the bearer token against the roles the method declares
(UNAUTHENTICATED / PERMISSION_DENIED); turns `libs.errors` into canonical
status codes with google.rpc details (ErrorInfo, BadRequest, RetryInfo);
logs unexpected exceptions with the trace id and answers INTERNAL without
leaking them; records latency by method and code; and returns the trace id
in the `x-trace-id` trailer.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Mapping

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from libs import errors
from libs.auth import AUTH_HEADER, Authenticator, Role
from libs.metrics import Metrics
from libs.telemetry import current_trace_id

log = logging.getLogger(__name__)

TRACE_ID_TRAILER = "x-trace-id"
_DETAILS_TRAILER = "grpc-status-details-bin"

_CODES: list[tuple[type[errors.ServiceError], grpc.StatusCode]] = [
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
]


class _Abort(Exception):
    """Internal: the call must end with this status."""

    def __init__(self, code: grpc.StatusCode, message: str, details: bytes | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details


def _pack(*messages) -> list[any_pb2.Any]:
    packed = []
    for message in messages:
        item = any_pb2.Any()
        item.Pack(message)
        packed.append(item)
    return packed


def status_of(exc: errors.ServiceError, domain: str) -> _Abort:
    code = next((c for kind, c in _CODES if isinstance(exc, kind)), grpc.StatusCode.UNKNOWN)
    details = [error_details_pb2.ErrorInfo(reason=exc.reason, domain=domain)]
    if isinstance(exc, errors.InvalidArgument):
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=exc.field, description=exc.problem
                    )
                ]
            )
        )
    retry_after = getattr(exc, "retry_after_s", None)
    if retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(math.ceil(retry_after * 1e9)))
        details.append(error_details_pb2.RetryInfo(retry_delay=delay))
    status = status_pb2.Status(code=code.value[0], message=exc.message, details=_pack(*details))
    return _Abort(code, exc.message, status.SerializeToString())


class ServiceInterceptor(grpc.aio.ServerInterceptor):
    """Auth, error mapping, latency and trace-id trailer for one service.

    `roles` maps each full method name (`/pkg.Service/Method`) to the roles it
    accepts. Methods not listed (health, reflection) are open.
    """

    def __init__(
        self,
        authenticator: Authenticator,
        roles: Mapping[str, frozenset[Role]],
        metrics: Metrics,
        domain: str,
    ) -> None:
        self._auth = authenticator
        self._roles = roles
        self._metrics = metrics
        self._domain = domain
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None:
            return cached
        handler = await continuation(handler_call_details)
        roles = self._roles.get(method)
        if handler is None or roles is None:
            return handler
        wrapped = self._wrap(method, handler, roles)
        self._wrapped[method] = wrapped
        return wrapped

    def _check(self, context: grpc.aio.ServicerContext, roles: frozenset[Role]) -> None:
        header = None
        for key, value in context.invocation_metadata() or ():
            if key == AUTH_HEADER:
                header = value
                break
        if header is None:
            raise _Abort(grpc.StatusCode.UNAUTHENTICATED, "missing bearer token")
        role = self._auth.role_of(header)
        if role is None:
            raise _Abort(grpc.StatusCode.UNAUTHENTICATED, "invalid bearer token")
        if role not in roles:
            raise _Abort(
                grpc.StatusCode.PERMISSION_DENIED, f"role {role.value} may not call this method"
            )

    def _to_abort(self, exc: BaseException, method: str) -> _Abort:
        if isinstance(exc, _Abort):
            return exc
        if isinstance(exc, errors.ServiceError):
            return status_of(exc, self._domain)
        log.exception("unhandled error in %s", method, exc_info=exc)
        return _Abort(grpc.StatusCode.INTERNAL, "internal error")

    def _observe(self, method: str, started: float, context) -> None:
        """Latency of a call the servicer aborted itself, or that was cancelled."""
        code = context.code() if hasattr(context, "code") else None
        name = code.name if isinstance(code, grpc.StatusCode) else "CANCELLED"
        self._metrics.rpc_latency.labels(method, name).observe(time.perf_counter() - started)

    async def _finish(self, context, method: str, started: float, abort: _Abort | None) -> None:
        code = abort.code if abort else grpc.StatusCode.OK
        self._metrics.rpc_latency.labels(method, code.name).observe(time.perf_counter() - started)
        trailer = [(TRACE_ID_TRAILER, current_trace_id())]
        if abort is None:
            context.set_trailing_metadata(trailer)
            return
        if abort.details is not None:
            trailer.append((_DETAILS_TRAILER, abort.details))
        await context.abort(abort.code, abort.message, trailing_metadata=tuple(trailer))

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler, roles: frozenset[Role]):
        short = method.rsplit("/", 1)[-1]
        if handler.request_streaming:
            raise TypeError(
                f"{method}: client-streaming RPCs are not supported by ServiceInterceptor"
            )

        if not handler.response_streaming:
            behavior = handler.unary_unary

            async def unary(request, context):
                started = time.perf_counter()
                abort = None
                response = None
                try:
                    self._check(context, roles)
                    response = await behavior(request, context)
                except (asyncio.CancelledError, grpc.aio.AbortError):
                    self._observe(short, started, context)
                    raise
                except Exception as exc:  # mapped to a status below, never swallowed
                    abort = self._to_abort(exc, method)
                await self._finish(context, short, started, abort)
                return response

            return grpc.unary_unary_rpc_method_handler(
                unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )

        stream_behavior = handler.unary_stream

        async def stream(request, context):
            started = time.perf_counter()
            abort = None
            try:
                self._check(context, roles)
                async for item in stream_behavior(request, context):
                    yield item
            except (asyncio.CancelledError, grpc.aio.AbortError):
                self._observe(short, started, context)
                raise
            except Exception as exc:  # mapped to a status below, never swallowed
                abort = self._to_abort(exc, method)
            await self._finish(context, short, started, abort)

        return grpc.unary_stream_rpc_method_handler(
            stream,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
