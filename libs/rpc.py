"""The one layer every RPC of a service runs through.

Per call it: opens the server span (the caller's trace context continued from
the metadata; `rpc.*` attributes and the status code as OpenTelemetry's gRPC
instrumentation names them); checks the bearer token against the roles the
method declares (UNAUTHENTICATED / PERMISSION_DENIED); turns `libs.errors`
into canonical status codes with google.rpc details (ErrorInfo, BadRequest,
RetryInfo); logs unexpected exceptions with the trace id and answers INTERNAL
without leaking them; records latency by method and code; and returns the
trace id in the `x-trace-id` trailer.

A method may have a gate (`Gate`): asked first, right after the token is
checked, whether the call is refused at once (overload). A refusal skips the
span, the latency histogram and the servicer, and its status is encoded once
and reused, so that refusing costs about what gRPC itself spends on the call.

It wraps each method handler once, when the service is added to the server
(`ServiceHandlers.add_to_server`), rather than as server interceptors: a
grpc.aio interceptor chain runs per call and cost about 0.25 ms of latency
per hop here, twice (OpenTelemetry's and ours). Health and reflection are
added unwrapped: open and untraced.

A unary method may also be served multiplexed (`multiplexed`): a
bidirectional stream whose every request envelope (`id`, `request`,
`traceparent`, `timeout_ms`) is one call of the unary method, answered by an
envelope with its id and the unary response or a `CallError`. Each such call
runs as the unary call would, with its own server span (same name, the
caller's trace context from the envelope), deadline, latency and status; the
token is checked once, when the stream opens. A call on a stream costs the
server a fraction of a unary call with its metadata (docs/ARCHITECTURE.md,
"Calls between services").
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import grpc
from google.protobuf import any_pb2, descriptor_pool, duration_pb2, message_factory
from google.rpc import error_details_pb2, status_pb2
from opentelemetry import propagate, trace

from libs import errors
from libs.auth import AUTH_HEADER, Authenticator, Role
from libs.metrics import Metrics
from libs.telemetry import current_trace_id
from treasure.common.v1 import common_pb2

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
    (errors.DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
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
    details = [error_details_pb2.ErrorInfo(reason=exc.reason, domain=domain, metadata=exc.metadata)]
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


#: Asked before a call does any work: the error it is refused with (at once:
#: overload, a deadline too short), or None to go on. It gets the request
#: and the call's time left (seconds, None without a deadline), and must be
#: cheap and synchronous; it should return the same few error objects again
#: and again, as their status is encoded once.
Gate = Callable[[Any, float | None], errors.ServiceError | None]


class _Captured:
    """Stands in for the server in a generated `add_*_to_server` call, to
    take the method handlers it registers."""

    def __init__(self) -> None:
        self.handlers: dict[str, grpc.RpcMethodHandler] = {}

    def add_generic_rpc_handlers(self, _handlers) -> None:
        pass  # the same handlers come again, by name, below

    def add_registered_method_handlers(self, _service: str, handlers) -> None:
        self.handlers.update(handlers)


class ServiceHandlers:
    """Tracing, auth, error mapping, latency and the trace-id trailer for the
    methods of one service.

    `roles` maps each full method name (`/pkg.Service/Method`) to the roles it
    accepts; every method of the service must be listed.
    """

    def __init__(
        self,
        authenticator: Authenticator,
        roles: Mapping[str, frozenset[Role]],
        metrics: Metrics,
        domain: str,
        tracer: trace.Tracer,
        gates: Mapping[str, Gate] | None = None,
        multiplexed: Mapping[str, str] | None = None,
        stream_in_flight: int = 256,
    ) -> None:
        """`gates`: by full method name, the methods that have one.
        `multiplexed`: stream method -> the unary method each of its
        envelopes calls (full names); `stream_in_flight`: the calls of one
        stream worked on at once, at most (more wait in the stream, under
        HTTP/2 flow control)."""
        self._auth = authenticator
        self._roles = roles
        self._metrics = metrics
        self._domain = domain
        self._tracer = tracer
        self._gates = dict(gates or {})
        self._refusals: dict[int, tuple[errors.ServiceError, _Abort]] = {}
        self._multiplexed = dict(multiplexed or {})
        self._stream_in_flight = stream_in_flight

    def add_to_server(
        self, add_servicer: Callable[[object, object], None], servicer: object, server
    ) -> dict[str, grpc.RpcMethodHandler]:
        """Registers `servicer` on `server` (through its generated `add_*`
        function) with every method wrapped; returns the wrapped handlers by
        full method name (`/pkg.Service/Method`), as registered."""
        captured = _Captured()
        add_servicer(servicer, captured)
        wrapped = {}
        for name, handler in captured.handlers.items():
            method = f"/{self._domain}/{name}"
            unary = self._multiplexed.get(method)
            if unary is None:
                wrapped[name] = self._wrap(method, handler)
            else:
                target = captured.handlers[unary.rsplit("/", 1)[-1]]
                wrapped[name] = self._wrap_multiplexed(method, unary, target)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(self._domain, wrapped),)
        )
        server.add_registered_method_handlers(self._domain, wrapped)
        return {f"/{self._domain}/{name}": handler for name, handler in wrapped.items()}

    def _check(self, metadata: Mapping[str, str], roles: frozenset[Role]) -> None:
        header = metadata.get(AUTH_HEADER)
        if header is None:
            raise _Abort(grpc.StatusCode.UNAUTHENTICATED, "missing bearer token")
        role = self._auth.role_of(header)
        if role is None:
            raise _Abort(grpc.StatusCode.UNAUTHENTICATED, "invalid bearer token")
        if role not in roles:
            raise _Abort(
                grpc.StatusCode.PERMISSION_DENIED, f"role {role.value} may not call this method"
            )

    def _allowed(self, metadata: Mapping[str, str], roles: frozenset[Role]) -> bool:
        header = metadata.get(AUTH_HEADER)
        return header is not None and self._auth.role_of(header) in roles

    def _refuse(self, context, refusal: errors.ServiceError) -> None:
        """Ends the call with a gate's refusal: its status encoded once, then
        reused, and no exception raised (cheaper than `context.abort`)."""
        cached = self._refusals.get(id(refusal))
        if cached is None or cached[0] is not refusal:
            if len(self._refusals) > 64:  # a gate that makes new errors: keep it bounded
                self._refusals.clear()
            cached = (refusal, status_of(refusal, self._domain))
            self._refusals[id(refusal)] = cached
        abort = cached[1]
        context.set_code(abort.code)
        context.set_details(abort.message)
        context.set_trailing_metadata(((_DETAILS_TRAILER, abort.details),))

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
        if not isinstance(code, grpc.StatusCode):
            code = grpc.StatusCode.CANCELLED
        self._record(method, started, code)

    def _record(self, method: str, started: float, code: grpc.StatusCode) -> None:
        """A call's latency by method and code, and its status on the span."""
        self._metrics.rpc_latency.labels(method, code.name).observe(time.perf_counter() - started)
        _record_status(code)

    def _start_span(self, method: str, short: str, metadata: Mapping[str, str]):
        return self._tracer.start_as_current_span(
            method,
            context=propagate.extract(metadata),
            kind=trace.SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "rpc.service": self._domain, "rpc.method": short},
        )

    async def _finish(self, context, method: str, started: float, abort: _Abort | None) -> None:
        self._record(method, started, abort.code if abort else grpc.StatusCode.OK)
        trailer: list[tuple[str, str | bytes]] = [(TRACE_ID_TRAILER, current_trace_id())]
        if abort is None:
            context.set_trailing_metadata(trailer)
            return
        if abort.details is not None:
            trailer.append((_DETAILS_TRAILER, abort.details))
        await context.abort(abort.code, abort.message, trailing_metadata=tuple(trailer))

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler):
        short = method.rsplit("/", 1)[-1]
        roles = self._roles[method]
        if method in self._gates and handler.response_streaming:
            raise TypeError(f"{method}: only unary methods may have a gate")
        if handler.request_streaming:
            raise TypeError(f"{method}: client-streaming RPCs are not supported by ServiceHandlers")

        if not handler.response_streaming:
            behavior = handler.unary_unary
            gate = self._gates.get(method)

            async def unary(request, context):
                started = time.perf_counter()
                metadata = dict(context.invocation_metadata() or ())
                # The gate only for a caller the token admits (the others are
                # refused below, traced, whatever the load).
                if gate is not None and self._allowed(metadata, roles):
                    refusal = gate(request, context.time_remaining())
                    if refusal is not None:
                        self._refuse(context, refusal)
                        return None
                with self._start_span(method, short, metadata):
                    abort = None
                    response = None
                    try:
                        self._check(metadata, roles)
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
            metadata = dict(context.invocation_metadata() or ())
            with self._start_span(method, short, metadata):
                abort = None
                try:
                    self._check(metadata, roles)
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

    def _wrap_multiplexed(
        self, method: str, unary: str, target: grpc.RpcMethodHandler
    ) -> grpc.RpcMethodHandler:
        """The stream `method`, each of whose envelopes is one call of the
        unary method `unary` (served by `target`, the servicer's handler)."""
        if target.request_streaming or target.response_streaming:
            raise TypeError(f"{method}: only a unary method can be multiplexed")
        behavior = target.unary_unary
        short = unary.rsplit("/", 1)[-1]
        roles = self._roles[method]
        request_envelope, envelope = envelope_classes(method)

        async def one(request, context, slots: asyncio.Semaphore, answers: asyncio.Queue) -> None:
            started = time.perf_counter()
            carrier = {"traceparent": request.traceparent} if request.traceparent else {}
            timeout = request.timeout_ms / 1000.0 if request.timeout_ms else None
            answer = envelope(id=request.id)
            try:
                with self._start_span(unary, short, carrier):
                    abort = None
                    try:
                        async with asyncio.timeout(timeout):
                            response = await behavior(
                                request.request, _CallContext(context, started, timeout)
                            )
                        answer.response.CopyFrom(response)
                    except TimeoutError:
                        abort = _Abort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")
                    except Exception as exc:  # mapped to a status below, never swallowed
                        abort = self._to_abort(exc, unary)
                    self._record(short, started, abort.code if abort else grpc.StatusCode.OK)
                    if abort is not None:
                        answer.error.CopyFrom(
                            common_pb2.CallError(
                                code=abort.code.value[0],
                                message=abort.message,
                                status_details=abort.details or b"",
                            )
                        )
                answers.put_nowait(answer)
            finally:
                slots.release()

        async def stream(requests, context) -> None:
            metadata = dict(context.invocation_metadata() or ())
            try:
                self._check(metadata, roles)
            except _Abort as abort:
                await context.abort(abort.code, abort.message)
            slots = asyncio.Semaphore(self._stream_in_flight)
            answers: asyncio.Queue = asyncio.Queue()
            calls: set[asyncio.Task[None]] = set()

            async def read() -> None:
                try:
                    async for request in requests:
                        await slots.acquire()
                        call = asyncio.ensure_future(one(request, context, slots, answers))
                        calls.add(call)
                        call.add_done_callback(calls.discard)
                    if calls:  # the caller is done writing: answer what it sent, then end
                        await asyncio.wait(set(calls))
                finally:  # ended, or failed reading: the stream ends (with the error, if any)
                    answers.put_nowait(None)

            reader = asyncio.ensure_future(read())
            try:
                while True:
                    answer = await answers.get()
                    if answer is None:
                        break
                    await context.write(answer)
                await reader
            finally:
                reader.cancel()
                for call in list(calls):
                    call.cancel()

        return grpc.stream_stream_rpc_method_handler(
            stream,
            request_deserializer=request_envelope.FromString,
            response_serializer=envelope.SerializeToString,
        )


class _CallContext:
    """What a servicer method sees of one multiplexed call: its deadline
    and the stream's metadata. Nothing else of a ServicerContext applies to
    one call of a stream."""

    def __init__(self, stream_context, started: float, timeout: float | None) -> None:
        self._stream = stream_context
        self._deadline = None if timeout is None else started + timeout

    def time_remaining(self) -> float | None:
        if self._deadline is None:
            return self._stream.time_remaining()
        return max(0.0, self._deadline - time.perf_counter())

    def invocation_metadata(self):
        return self._stream.invocation_metadata()


def envelope_classes(method: str) -> tuple[Any, Any]:
    """The request and response envelopes of the multiplexed stream method
    `method` (`/pkg.Service/Method`), from the generated descriptors."""
    domain, _, name = method.lstrip("/").partition("/")
    found = descriptor_pool.Default().FindServiceByName(domain).methods_by_name[name]
    return (
        message_factory.GetMessageClass(found.input_type),
        message_factory.GetMessageClass(found.output_type),
    )


def _record_status(code: grpc.StatusCode) -> None:
    """The status on the current (server) span, as OpenTelemetry's gRPC
    instrumentation records it."""
    span = trace.get_current_span()
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code is not grpc.StatusCode.OK:
        span.set_status(trace.Status(trace.StatusCode.ERROR, f"{code.name}"))
