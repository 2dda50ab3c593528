"""The role matrix: every RPC of every service, with no token, a wrong token,
and each role's token. Requests are empty, so an allowed call ends in
validation (INVALID_ARGUMENT), never in a write.

The roles each RPC accepts are pinned here by hand (`ALLOWED`), not read from
the servers' ROLES tables: a wrong policy in a server must fail this test."""

from __future__ import annotations

import grpc
import pytest

from libs.auth import Role
from tests.support.apis import APIS, call, methods
from tests.support.env import ADMIN_TOKEN, CLIENT_TOKEN, SERVICE_TOKEN, bearer
from tests.support.stack import Stack

CLIENT, SERVICE, ADMIN = Role.CLIENT, Role.SERVICE, Role.ADMIN
PUBLIC = frozenset({CLIENT, ADMIN})

#: service -> RPC -> the roles that may call it. Every RPC must be listed.
ALLOWED: dict[str, dict[str, frozenset[Role]]] = {
    "scan": {
        "SubmitScan": PUBLIC,
        "GetScan": PUBLIC,
        "ListPlayerScans": PUBLIC,
    },
    "score": {
        "Unlock": frozenset({SERVICE}),
        "UnlockStream": frozenset({SERVICE}),
        "GetScore": PUBLIC,
        "GetProgress": PUBLIC,
        "StreamScores": frozenset({SERVICE}),
    },
    "leaderboard": {
        "SubmitScores": frozenset({SERVICE}),
        "GetTop": PUBLIC,
        "GetRank": PUBLIC,
        "GetAround": PUBLIC,
        "WatchTop": PUBLIC,
        "RebuildBoard": frozenset({ADMIN}),
    },
    "geo": {
        "CreateHunt": frozenset({ADMIN}),
        "UpdateHunt": frozenset({ADMIN}),
        "UpsertCheckpoint": frozenset({ADMIN}),
        "DeactivateCheckpoint": frozenset({ADMIN}),
        "PutTile": frozenset({ADMIN}),
        "RefreshTiles": frozenset({ADMIN}),
        # score and the leaderboard ask whether a hunt exists
        "GetHunt": frozenset({CLIENT, ADMIN, SERVICE}),
        # the leaderboard lists the played hunts to warm their boards
        "ListHunts": frozenset({CLIENT, ADMIN, SERVICE}),
        "ListCheckpoints": PUBLIC,
        "UpdateLocation": PUBLIC,
        "GetPlayerLocation": PUBLIC,
        "NearbyCheckpoints": PUBLIC,
        "NearbyPlayers": PUBLIC,
        "GetTile": PUBLIC,
        "GetTiles": PUBLIC,
        "CheckIn": frozenset({SERVICE}),
        "CheckInStream": frozenset({SERVICE}),
    },
}
CREDENTIALS = {
    "none": (None, None),
    "wrong": (bearer("not-a-token"), None),
    "client": (bearer(CLIENT_TOKEN), Role.CLIENT),
    "service": (bearer(SERVICE_TOKEN), Role.SERVICE),
    "admin": (bearer(ADMIN_TOKEN), Role.ADMIN),
}
CASES = [
    (service, method.name, credential)
    for service in APIS
    for method in methods(service)
    for credential in CREDENTIALS
]


@pytest.mark.parametrize("service", list(APIS))
def test_the_table_lists_exactly_the_rpcs_of_each_service(service: str):
    """A new RPC fails here until its roles are pinned; so does a stale entry."""
    assert set(ALLOWED.get(service, {})) == {method.name for method in methods(service)}


@pytest.mark.parametrize(("service", "method", "credential"), CASES)
async def test_role_matrix(stack: Stack, service: str, method: str, credential: str):
    allowed = ALLOWED.get(service, {}).get(method)
    assert allowed is not None, f"{service} {method}: no roles pinned in ALLOWED"
    metadata, role = CREDENTIALS[credential]
    code, _ = await call(stack.channel(service), service, method, metadata=metadata)
    if role is None:
        assert code == grpc.StatusCode.UNAUTHENTICATED
    elif role in allowed:
        assert code not in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.INTERNAL,
                            grpc.StatusCode.UNKNOWN, grpc.StatusCode.UNIMPLEMENTED), code  # fmt: skip
    else:
        assert code == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize("service", list(APIS))
def test_the_servers_enforce_the_pinned_roles(service: str):
    """The servers' own ROLES tables against the pinned one, without a stack:
    a quick diff of the policy (the matrix above is the proof on the wire)."""
    enforced = {rpc: frozenset(roles) for rpc, roles in APIS[service][2].items()}
    assert enforced == ALLOWED.get(service)


def test_a_client_token_never_reaches_an_internal_rpc():
    internal = {
        ("score", "Unlock"),
        ("score", "UnlockStream"),
        ("score", "StreamScores"),
        ("geo", "CheckIn"),
        ("geo", "CheckInStream"),
        ("leaderboard", "SubmitScores"),
    }
    for service, method in internal:
        assert APIS[service][2][method] == {Role.SERVICE}
