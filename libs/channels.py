"""Outbound gRPC channels to peer services.

A channel presents this service's peer token, carries trace context (the
OTel client interceptors), bounds message sizes, keeps connections alive and
retries UNAVAILABLE transparently a few times: every internal RPC here is
idempotent. Deadlines are set per call by each service's `client.py`.
"""

from __future__ import annotations

import json
from pathlib import Path

import grpc

from libs import errors
from libs.auth import bearer_interceptors
from libs.config import ServiceSettings

_SERVICE_CONFIG = json.dumps(
    {
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
        ]
    }
)


def channel_options(max_message_bytes: int) -> list[tuple[str, object]]:
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.enable_retries", 1),
        ("grpc.service_config", _SERVICE_CONFIG),
    ]


def open_channel(
    target: str,
    settings: ServiceSettings,
    interceptors: list | None = None,
    token: str | None = None,
) -> grpc.aio.Channel:
    """A channel to `target` (host:port) presenting `token` (default: the peer token)."""
    all_interceptors = list(interceptors or []) + list(
        bearer_interceptors(settings.tokens.peer if token is None else token)
    )
    options = channel_options(settings.max_message_bytes)
    tls = settings.tls
    if tls.client_enabled:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=Path(tls.ca_file).read_bytes(),
            private_key=Path(tls.key_file).read_bytes() if tls.key_file else None,
            certificate_chain=Path(tls.cert_file).read_bytes() if tls.cert_file else None,
        )
        return grpc.aio.secure_channel(
            target, credentials, options=options, interceptors=all_interceptors
        )
    return grpc.aio.insecure_channel(target, options=options, interceptors=all_interceptors)


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


def remaining(
    context: grpc.aio.ServicerContext | None, default_s: float, margin_s: float = 0.02
) -> float:
    """A deadline for a downstream call: `default_s`, shortened to what is left
    of the incoming call's deadline (minus a margin), never below 1 ms."""
    if context is None:
        return default_s
    left = context.time_remaining()
    if left is None:
        return default_s
    return max(0.001, min(default_s, left - margin_s))
