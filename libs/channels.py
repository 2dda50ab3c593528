"""Outbound gRPC channels to peer services.

A channel presents this service's peer token, opens a client span and carries
its trace context on every call, bounds message sizes, keeps connections alive
and retries UNAVAILABLE transparently a few times: every internal RPC here is
idempotent. Deadlines are set per call by each service's `client.py`.

Token and trace context are added by `PeerChannel` around the stubs' calls,
not by grpc.aio client interceptors: an intercepted call runs as an extra task
per call, and the two interceptors (OpenTelemetry's and the token) cost about
0.15 ms per call here. The spans are named and attributed as OpenTelemetry's
gRPC instrumentation names them.

`PeerChannel.multiplexed` carries the calls of a unary method on one
long-lived bidirectional stream of the server's (libs.rpc, `multiplexed`):
each call is one envelope with an id, its trace context and its deadline, and
keeps its own client span, deadline and error (an `AioRpcError` as the unary
call would raise). A call costs a fraction of a unary call. When the stream
breaks as UNAVAILABLE (the peer restarted, the connection dropped) its calls
in flight are sent again on a new stream, up to three times in all, as the
unary retry policy would: only idempotent methods may be multiplexed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import socket
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path

import grpc
from opentelemetry import propagate, trace

from libs import backoff, errors
from libs.auth import bearer_metadata
from libs.config import ServiceSettings, target_width
from libs.rpc import envelope_classes

#: Replicas: calls go round robin to those whose grpc.health.v1 status (the
#: server's overall one, "") is SERVING; one that is starting, shutting down
#: or gone gets none (libs.server sets NOT_SERVING before it stops). The
#: service config of every channel to the services, the tools' too.
BALANCING = {"loadBalancingConfig": [{"round_robin": {}}], "healthCheckConfig": {"serviceName": ""}}

_SERVICE_CONFIG = json.dumps(
    {
        **BALANCING,
        "methodConfig": [
            {
                "name": [{}],
                "retryPolicy": {
                    "maxAttempts": 3,
                    "initialBackoff": "0.02s",
                    "maxBackoff": "0.2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ],
    }
)

#: A multiplexed stream takes new calls for this long, then a new one does.
STREAM_MAX_AGE_S = 30.0


def channel_options(max_message_bytes: int) -> list[tuple[str, object]]:
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        # A peer that was down is called again within a second of coming back:
        # gRPC's default reconnect backoff grows to two minutes, and a
        # leaderboard back after 30 s would wait for the next attempt.
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1_000),
        ("grpc.enable_retries", 1),
        ("grpc.service_config", _SERVICE_CONFIG),
    ]


def open_channel(
    target: str,
    settings: ServiceSettings,
    tracer: trace.Tracer | None = None,
    token: str | None = None,
) -> PeerChannel:
    """A channel to `target` (a gRPC target: host:port, an `ipv4:` list of
    replicas or `dns:///name:port`; libs.config.peer_target) presenting `token`
    (default: the peer token), with client spans from `tracer` (default: the
    global one)."""
    options = channel_options(settings.max_message_bytes)
    tls = settings.tls
    if tls.client_enabled:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=Path(tls.ca_file).read_bytes(),
            private_key=Path(tls.key_file).read_bytes() if tls.key_file else None,
            certificate_chain=Path(tls.cert_file).read_bytes() if tls.cert_file else None,
        )
        channel = grpc.aio.secure_channel(target, credentials, options=options)
    else:
        channel = grpc.aio.insecure_channel(target, options=options)
    return PeerChannel(
        channel,
        bearer_metadata(settings.tokens.peer if token is None else token),
        tracer or trace.get_tracer(__name__),
        target,
    )


class PeerChannel:
    """A grpc.aio channel whose calls present a token and are traced. Stubs
    are built on it as on any channel; everything else is the channel's."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        metadata: Sequence[tuple[str, str]],
        tracer: trace.Tracer,
        target: str = "",
    ) -> None:
        self._channel = channel
        self._metadata = tuple(metadata)
        self._tracer = tracer
        self.target = target
        self._multiplexers: list[Multiplexed] = []

    def multiplexed(
        self, stream_method: str, unary_method: str, *, max_age_s: float = STREAM_MAX_AGE_S
    ) -> Multiplexed:
        """Calls of `unary_method` carried on the server's multiplexed
        `stream_method` (full names, `/pkg.Service/Method`); called as a unary
        stub method is (`request, timeout=`). `max_age_s`: a stream takes no
        new call after this long (a new one does), so calls spread again over
        the replicas when one comes back."""
        multiplexer = Multiplexed(self, stream_method, unary_method, max_age_s=max_age_s)
        self._multiplexers.append(multiplexer)
        return multiplexer

    def unary_unary(self, method: str, *args, **kwargs) -> _UnaryUnary:
        return _UnaryUnary(self, method, self._channel.unary_unary(method, *args, **kwargs))

    def unary_stream(self, method: str, *args, **kwargs) -> _UnaryStream:
        return _UnaryStream(self, method, self._channel.unary_stream(method, *args, **kwargs))

    def __getattr__(self, name: str):
        return getattr(self._channel, name)

    async def close(self, grace: float | None = None) -> None:
        for multiplexer in self._multiplexers:
            multiplexer.close()
        await self._channel.close(grace)

    async def __aenter__(self) -> PeerChannel:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _start_span(self, method: str) -> trace.Span:
        service, _, name = method.lstrip("/").partition("/")
        return self._tracer.start_span(
            method,
            kind=trace.SpanKind.CLIENT,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
        )

    def _metadata_for(self, span: trace.Span, extra) -> list[tuple[str, str]]:
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(span))
        return [*self._metadata, *(extra or ()), *carrier.items()]


def _end(span: trace.Span, code: grpc.StatusCode) -> None:
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code is not grpc.StatusCode.OK:
        span.set_status(trace.Status(trace.StatusCode.ERROR, code.name))
    span.end()


@contextlib.contextmanager
def _status(finish: Callable[[grpc.StatusCode], None]) -> Iterator[None]:
    """Calls `finish` with the call's status once the block ends: OK, the
    peer's code, or CANCELLED when the caller gave up (or anything else)."""
    code = grpc.StatusCode.OK
    try:
        yield
    except grpc.aio.AioRpcError as err:
        code = err.code()
        raise
    except BaseException:
        code = grpc.StatusCode.CANCELLED
        raise
    finally:
        finish(code)


class _UnaryUnary:
    def __init__(self, channel: PeerChannel, method: str, call) -> None:
        self._channel = channel
        self._method = method
        self._call = call

    async def __call__(self, request, *, metadata=None, **kwargs):
        span = self._channel._start_span(self._method)
        with _status(lambda code: _end(span, code)), trace.use_span(span, end_on_exit=False):
            return await self._call(
                request, metadata=self._channel._metadata_for(span, metadata), **kwargs
            )


class _UnaryStream:
    def __init__(self, channel: PeerChannel, method: str, call) -> None:
        self._channel = channel
        self._method = method
        self._call = call

    def __call__(self, request, *, metadata=None, **kwargs) -> _TracedStream:
        span = self._channel._start_span(self._method)
        call = self._call(request, metadata=self._channel._metadata_for(span, metadata), **kwargs)
        return _TracedStream(call, span)


class _TracedStream:
    """A server-streaming call whose client span ends with the stream."""

    def __init__(self, call, span: trace.Span) -> None:
        self._call = call
        self._span = span
        self._ended = False

    async def __aiter__(self) -> AsyncIterator:
        with _status(self._finish):
            async for item in self._call:
                yield item

    def cancel(self) -> bool:
        self._finish(grpc.StatusCode.CANCELLED)
        return self._call.cancel()

    def _finish(self, code: grpc.StatusCode) -> None:
        if not self._ended:
            self._ended = True
            _end(self._span, code)

    def __getattr__(self, name: str):
        return getattr(self._call, name)


_CODE_OF = {code.value[0]: code for code in grpc.StatusCode}
#: Attempts of a multiplexed call whose stream broke (the unary retry
#: policy's: 3 attempts, backoff from 20 ms doubling, at most 0.2 s).
_STREAM_ATTEMPTS = 3


class _Broken(Exception):
    """Internal: the stream a call was sent on ended before its answer."""

    def __init__(self, error: grpc.aio.AioRpcError) -> None:
        super().__init__(error.details())
        self.error = error


class _Stream:
    """One open stream of a `Multiplexed`: a writer task sends the envelopes
    in order, a reader task hands each answer to its caller by id. A retired
    stream takes no new call: it half-closes once its envelopes are written,
    and ends when the server has answered them."""

    def __init__(self, call, on_end: Callable[[_Stream], None], opened_at: float) -> None:
        self._call = call
        self._on_end = on_end
        self.opened_at = opened_at
        self.pending: dict[int, asyncio.Future] = {}
        self._outbox: deque = deque()
        self._wake = asyncio.Event()
        self._ended = False
        self._retired = False
        self._writer = asyncio.ensure_future(self._write())
        self._reader = asyncio.ensure_future(self._read())

    def send(self, envelope, future: asyncio.Future) -> None:
        self.pending[envelope.id] = future
        self._outbox.append(envelope)
        self._wake.set()

    def retire(self) -> None:
        self._retired = True
        self._wake.set()

    async def _write(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._outbox:
                    await self._call.write(self._outbox.popleft())
                if self._retired:
                    await self._call.done_writing()
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # The call ended under the write: the peer went away, or refused
            # the stream as it was being written (grpc.aio then reports
            # INTERNAL locally, not the peer's status). Retried as a broken
            # stream; a refusal shows its own status on the next one.
            self.end(_unavailable(f"stream write failed: {exc}"))

    async def _read(self) -> None:
        error: grpc.aio.AioRpcError
        try:
            async for answer in self._call:
                future = self.pending.pop(answer.id, None)
                if future is not None and not future.done():
                    future.set_result(answer)
            error = _unavailable("the peer ended the stream")
        except grpc.aio.AioRpcError as err:
            error = err
        except asyncio.CancelledError:
            error = _unavailable("the stream was closed")
        except Exception as exc:  # a broken stream is retried, whatever broke it
            error = _unavailable(f"stream read failed: {exc}")
        self.end(error)

    def end(self, error: grpc.aio.AioRpcError) -> None:
        """Fails every call in flight on this stream (they are retried) and
        closes it; the next call opens a new one."""
        if self._ended:
            return
        self._ended = True
        self._on_end(self)
        for future in self.pending.values():
            if not future.done():
                future.set_exception(_Broken(error))
        self.pending.clear()
        self._writer.cancel()
        self._call.cancel()


class Multiplexed:
    """Calls of a unary method on long-lived streams (see the module's doc).

    One stream per replica the target names (its `ipv4:` list, or what its
    `dns:` name resolves to, looked up again as streams are renewed): the
    calls take the streams in turn, and each stream is opened as a new call,
    which the channel's round robin places on the next SERVING replica. A
    stream is opened by the first call of its turn, again after it broke, and
    renewed after `max_age_s`, so calls spread over the replicas again when a
    lost one comes back."""

    def __init__(
        self,
        channel: PeerChannel,
        stream_method: str,
        unary_method: str,
        *,
        max_age_s: float = STREAM_MAX_AGE_S,
    ) -> None:
        self._channel = channel
        self._unary = unary_method
        request_class, response_class = envelope_classes(stream_method)
        self._envelope = request_class
        self._open_call = channel._channel.stream_stream(
            stream_method,
            request_serializer=request_class.SerializeToString,
            response_deserializer=response_class.FromString,
        )
        self._max_age_s = max_age_s
        self._streams: list[_Stream | None] = [None] * target_width(channel.target)
        self._turns = itertools.count()
        self._ids = itertools.count(1)
        self._dns = channel.target if channel.target.startswith("dns:") else ""
        self._resolved_at = -math.inf
        self._resolving: asyncio.Task[None] | None = None
        # Connect to every replica now: a stream opened while only one of them
        # is connected lands on it (and stays there until renewed).
        channel._channel.get_state(try_to_connect=True)

    async def __call__(self, request, *, timeout: float | None = None):  # noqa: ASYNC109
        # (`timeout=`: called as a grpc stub method is)
        span = self._channel._start_span(self._unary)
        with _status(lambda code: _end(span, code)), trace.use_span(span, end_on_exit=False):
            carrier: dict[str, str] = {}
            propagate.inject(carrier, context=trace.set_span_in_context(span))
            traceparent = carrier.get("traceparent", "")
            loop = asyncio.get_running_loop()
            deadline = None if timeout is None else loop.time() + timeout
            for attempt in range(_STREAM_ATTEMPTS):
                left = None if deadline is None else deadline - loop.time()
                if left is not None and left <= 0:
                    break
                try:
                    return await self._once(request, traceparent, left)
                except _Broken as broken:
                    last = attempt + 1 == _STREAM_ATTEMPTS
                    if last or broken.error.code() is not grpc.StatusCode.UNAVAILABLE:
                        raise broken.error from None  # refused (a token), or down for good
                    await asyncio.sleep(backoff.exponential(attempt, base_s=0.02, cap_s=0.2))
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.DEADLINE_EXCEEDED, details="Deadline Exceeded"
            )

    async def _once(self, request, traceparent: str, time_left: float | None):
        stream = self._next_stream()
        envelope = self._envelope(
            id=next(self._ids),
            request=request,
            traceparent=traceparent,
            timeout_ms=0 if time_left is None else max(1, math.ceil(time_left * 1000)),
        )
        future = asyncio.get_running_loop().create_future()
        stream.send(envelope, future)
        try:
            async with asyncio.timeout(time_left):
                answer = await future
        except TimeoutError:
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.DEADLINE_EXCEEDED, details="Deadline Exceeded"
            ) from None
        finally:
            stream.pending.pop(envelope.id, None)
        if answer.HasField("error"):
            error = answer.error
            trailing = (
                grpc.aio.Metadata(("grpc-status-details-bin", error.status_details))
                if error.status_details
                else grpc.aio.Metadata()
            )
            raise grpc.aio.AioRpcError(
                _CODE_OF.get(error.code, grpc.StatusCode.UNKNOWN),
                grpc.aio.Metadata(),
                trailing,
                details=error.message,
            )
        return answer.response

    def _next_stream(self) -> _Stream:
        now = asyncio.get_running_loop().time()
        turn = next(self._turns) % len(self._streams)
        stream = self._streams[turn]
        if stream is not None and now - stream.opened_at >= self._max_age_s:
            self._streams[turn] = None
            stream.retire()  # its calls are answered on it; new ones go to a new stream
            stream = None
        if stream is None:
            stream = self._streams[turn] = _Stream(
                self._open_call(metadata=self._channel._metadata), self._ended, now
            )
            if self._dns and now - self._resolved_at >= self._max_age_s and not self._resolving:
                self._resolved_at = now
                self._resolving = asyncio.ensure_future(self._resolve())
        return stream

    async def _resolve(self) -> None:
        """As many streams as the `dns:` name has addresses now."""
        try:
            host, _, port = self._dns.rsplit("/", 1)[-1].rpartition(":")
            found = await asyncio.get_running_loop().getaddrinfo(
                host, port or None, type=socket.SOCK_STREAM
            )
            width = max(1, len({info[4][:2] for info in found}))
        except OSError:
            return  # gRPC's own resolver says what is wrong; keep the width
        finally:
            self._resolving = None
        for stream in self._streams[width:]:
            if stream is not None:
                stream.retire()
        self._streams = self._streams[:width] + [None] * (width - len(self._streams))

    def _ended(self, stream: _Stream) -> None:
        for turn, open_stream in enumerate(self._streams):
            if open_stream is stream:
                self._streams[turn] = None

    def close(self) -> None:
        for stream in self._streams:
            if stream is not None:
                stream.end(_unavailable("the channel was closed"))
        if self._resolving is not None:
            self._resolving.cancel()


def _unavailable(details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details
    )


_RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
}


def peer_error(peer: str, err: grpc.aio.AioRpcError) -> errors.ServiceError:
    """What a failed call to a peer means to the caller, as a `libs.errors` kind.

    Transient failures (the peer down, slow, or broken) are `Unavailable`: the
    caller may retry. RESOURCE_EXHAUSTED stays that. Anything else is a bug in
    how we called the peer and surfaces as FailedPrecondition with the peer's
    message, never as the peer's INVALID_ARGUMENT (whose field names are not
    the caller's).
    """
    code = err.code()
    message = f"{peer}: {code.name.lower()}: {err.details() or ''}"
    if code in _RETRYABLE:
        return errors.Unavailable(message, retry_after_s=1.0, reason="PEER_UNAVAILABLE")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return errors.ResourceExhausted(message, retry_after_s=1.0, reason="PEER_EXHAUSTED")
    if code == grpc.StatusCode.NOT_FOUND:
        return errors.NotFound(message)
    return errors.FailedPrecondition(message, reason="PEER_REJECTED")
