"""Bearer tokens and roles.

A token maps to one role: `client` (the mobile backend: public RPCs),
`service` (internal RPCs between our services) or `admin` (catalog writes,
rebuilds). Each RPC declares the roles it accepts (`PUBLIC`, `INTERNAL`,
`ADMIN`); `libs.rpc` enforces them. Tokens are compared in constant time and
are never logged or put in a span.
"""

from __future__ import annotations

import enum
import hmac
from collections.abc import Sequence

import grpc

from libs.config import Tokens


class Role(enum.StrEnum):
    CLIENT = "client"
    SERVICE = "service"
    ADMIN = "admin"


#: Public RPCs: the mobile backend, and operators with an admin token.
PUBLIC = frozenset({Role.CLIENT, Role.ADMIN})
#: Internal RPCs: only our own services. A client token never reaches them.
INTERNAL = frozenset({Role.SERVICE})
#: Catalog writes and rebuilds.
ADMIN = frozenset({Role.ADMIN})

AUTH_HEADER = "authorization"
_BEARER = "bearer "


class Authenticator:
    """Maps a presented bearer token to its role, in constant time per token."""

    def __init__(self, tokens: Tokens) -> None:
        self._table: list[tuple[bytes, Role]] = [
            (t.encode(), role)
            for role, group in (
                (Role.CLIENT, tokens.client),
                (Role.SERVICE, tokens.service),
                (Role.ADMIN, tokens.admin),
            )
            for t in group
        ]

    def role_of(self, header: str | None) -> Role | None:
        """The role of an `authorization` header value, None when unknown."""
        if not header or not header[: len(_BEARER)].lower() == _BEARER:
            return None
        presented = header[len(_BEARER) :].strip().encode()
        found: Role | None = None
        for token, role in self._table:  # no early exit: time does not depend on which matched
            if hmac.compare_digest(token, presented):
                found = role
        return found


def bearer_metadata(token: str) -> tuple[tuple[str, str], ...]:
    return ((AUTH_HEADER, f"Bearer {token}"),) if token else ()


class _BearerMixin:
    def __init__(self, token: str) -> None:
        self._metadata = bearer_metadata(token)

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = list(details.metadata or ()) + list(self._metadata)
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )


class BearerUnaryUnary(_BearerMixin, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, client_call_details, request):
        return await continuation(self._details(client_call_details), request)


class BearerUnaryStream(_BearerMixin, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation, client_call_details, request):
        return await continuation(self._details(client_call_details), request)


def bearer_interceptors(token: str) -> Sequence[grpc.aio.ClientInterceptor]:
    """Client interceptors that present `token` on every call."""
    if not token:
        return ()
    return (BearerUnaryUnary(token), BearerUnaryStream(token))
