"""Arbitrary and oversized input to every RPC (with a token that may call it):
only documented statuses come back — never INTERNAL or UNKNOWN, never a crash
— and no id that breaks the key rules ever reaches a Redis key (checked on
traffic of that test's own: valid requests that write keys in every service,
and the same requests with each id replaced by a hostile one)."""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import UTC, datetime

import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from libs import rediskit
from libs.auth import Role
from libs.timestamps import timestamp
from tests.support.apis import APIS, call, methods, request_class
from tests.support.env import ADMIN_TOKEN, CLIENT_TOKEN, SERVICE_TOKEN, bearer
from tests.support.hunts import Spot, create_hunt, spots
from tests.support.polling import eventually
from tests.support.scans import request
from tests.support.stack import Stack
from tools.inprocess import checkpoint_message, hunt_message
from treasure.common.v1 import common_pb2
from treasure.geo.v1 import geo_pb2
from treasure.leaderboard.v1 import leaderboard_pb2
from treasure.scan.v1 import scan_pb2
from treasure.score.v1 import score_pb2

ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
}
TOKEN = {Role.CLIENT: CLIENT_TOKEN, Role.SERVICE: SERVICE_TOKEN, Role.ADMIN: ADMIN_TOKEN}
# Every key any service writes: a prefix, then ids that keep the id rule inside
# their hash tag and segments.
ID = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
KEY = re.compile(rf"[a-z]+(:[a-z_]+)*:\{{{ID}(:{ID})?\}}(:[A-Za-z0-9_.:-]+)?")

nasty_text = st.one_of(
    st.text(max_size=80),
    st.sampled_from(
        ["", "{h}", "a:b", "a b", "a\nb", "x" * 65, "x" * 5000, "ok-id", "p1", "h1", "\x00", "ü"]
    ),
)
numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -1.0, 90.0, 180.000001, 1e308]),
)


def message_strategy(descriptor, depth: int = 0):
    fields = {}
    for field in descriptor.fields:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if depth > 2:
                continue
            if field.message_type.full_name == "google.protobuf.Timestamp":
                inner = st.fixed_dictionaries(
                    {
                        "seconds": st.integers(-(2**40), 2**40),
                        "nanos": st.integers(-(10**9), 2 * 10**9),
                    }
                )
            else:
                inner = message_strategy(field.message_type, depth + 1)
        elif field.type == FieldDescriptor.TYPE_STRING:
            inner = nasty_text
        elif field.type == FieldDescriptor.TYPE_BYTES:
            inner = st.one_of(st.binary(max_size=64), st.just(b"x" * 300_000))
        elif field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
            inner = numbers
        elif field.type == FieldDescriptor.TYPE_BOOL:
            inner = st.booleans()
        elif field.type == FieldDescriptor.TYPE_ENUM:
            inner = st.integers(-1, 8)
        elif field.type in (
            FieldDescriptor.TYPE_INT64,
            FieldDescriptor.TYPE_UINT64,
            FieldDescriptor.TYPE_SINT64,
        ):
            inner = (
                st.integers(-(2**63), 2**63 - 1)
                if field.type != FieldDescriptor.TYPE_UINT64
                else st.integers(0, 2**64 - 1)
            )
        else:
            inner = st.integers(-(2**31), 2**31 - 1)
        if field.is_repeated:
            inner = st.lists(inner, max_size=3)
        fields[field.name] = st.one_of(st.none(), inner)
    return st.fixed_dictionaries(fields)


def build(cls, values: dict):
    message = cls()
    for name, value in values.items():
        if value is None:
            continue
        field = cls.DESCRIPTOR.fields_by_name[name]
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            sub_cls = type(getattr(message, name)) if not field.is_repeated else None
            if field.is_repeated:
                for item in value:
                    target = getattr(message, name).add()
                    target.CopyFrom(build(type(target), item))
            else:
                getattr(message, name).CopyFrom(build(sub_cls, value))
        elif field.is_repeated:
            getattr(message, name).extend(value)
        else:
            setattr(message, name, value)
    return message


CASES = [(service, method.name) for service in APIS for method in methods(service)]


def token_for(service: str, method_name: str) -> tuple[tuple[str, str], ...]:
    """Metadata with a token the server lets call the RPC."""
    return bearer(TOKEN[sorted(APIS[service][2][method_name])[0]])


@pytest.mark.parametrize(("service", "method_name"), CASES)
async def test_arbitrary_input_gets_only_documented_statuses(
    stack: Stack, service: str, method_name: str
):
    cls = request_class(service, method_name)
    channel = stack.channel(service)
    metadata = token_for(service, method_name)

    # Hypothesis draws the requests (it cannot drive a coroutine itself); they
    # are then sent one by one on this loop.
    drawn: list[dict] = []

    @settings(
        max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None
    )
    @given(values=message_strategy(cls.DESCRIPTOR))
    def draw(values):
        drawn.append(values)

    draw()
    for values in drawn:
        try:
            message = build(cls, values)
        except (ValueError, TypeError, OverflowError):
            continue  # not representable in the proto: nothing to send
        code, details = await call(channel, service, method_name, message, metadata=metadata)
        assert code in ALLOWED, (code, details, message)
    for process in stack.processes.values():
        assert process.poll() is None, "a service died"


# -- no bad id reaches a Redis key --------------------------------------------------

#: Ids that break the key rule (ID): what a key must never be built from.
HOSTILE_IDS = (
    "",
    "{h}",
    "}",
    "a:b",
    "lb:{x}",
    "a b",
    "a\nb",
    "a*b",
    "-lead",
    "ü",
    "\x00",
    "x" * 65,
    "x" * 5000,
)


def valid_traffic(hunt_id: str, spot: Spot, mark: str, n: int) -> list[tuple[str, str, Message]]:
    """A valid request to every RPC that takes an id (ListHunts takes none),
    with fresh ids (`mark` in each, `n` making them unique): what makes every
    service write keys. Sent before the hostile copies, so no rate limit or
    replay spoils them."""
    now = datetime.now(UTC)
    player = f"kp-{mark}-{n}"
    here = common_pb2.GeoPoint(lat=spot.lat, lon=spot.lon)
    at = timestamp(now)
    hunt = hunt_message(hunt_id)
    return [
        ("scan", "SubmitScan", request(player, hunt_id, spot, at=now, client_scan_id=f"c-{mark}-{n}")),
        ("scan", "GetScan", scan_pb2.GetScanRequest(scan_id=f"s-{mark}-{n}")),
        ("scan", "ListPlayerScans", scan_pb2.ListPlayerScansRequest(player_id=player, hunt_id=hunt_id)),
        ("score", "Unlock", score_pb2.UnlockRequest(
            scan_id=f"u-{mark}-{n}", hunt_id=hunt_id, player_id=f"ku-{mark}-{n}",
            checkpoint_id=spot.checkpoint_id, points=1, at=at)),
        ("score", "UnlockStream", score_pb2.UnlockStreamRequest(id=1, request=score_pb2.UnlockRequest(
            scan_id=f"us-{mark}-{n}", hunt_id=hunt_id, player_id=f"kus-{mark}-{n}",
            checkpoint_id=spot.checkpoint_id, points=1, at=at))),
        ("score", "GetScore", score_pb2.GetScoreRequest(hunt_id=hunt_id, player_id=player)),
        ("score", "GetProgress", score_pb2.GetProgressRequest(hunt_id=hunt_id, player_id=player)),
        ("score", "StreamScores", score_pb2.StreamScoresRequest(hunt_id=hunt_id)),
        ("leaderboard", "SubmitScores", leaderboard_pb2.SubmitScoresRequest(updates=[
            leaderboard_pb2.ScoreUpdate(hunt_id=hunt_id, player_id=f"kl-{mark}-{n}",
                                        total_points=1, reached_at=at, version=1)])),
        ("leaderboard", "RebuildBoard", leaderboard_pb2.RebuildBoardRequest(hunt_id=hunt_id)),
        ("leaderboard", "GetTop", leaderboard_pb2.GetTopRequest(hunt_id=hunt_id, limit=10)),
        ("leaderboard", "GetRank", leaderboard_pb2.GetRankRequest(hunt_id=hunt_id, player_id=player)),
        ("leaderboard", "GetAround", leaderboard_pb2.GetAroundRequest(hunt_id=hunt_id, player_id=player, n=2)),
        ("leaderboard", "WatchTop", leaderboard_pb2.WatchTopRequest(hunt_id=hunt_id, limit=3)),
        ("geo", "CreateHunt", geo_pb2.CreateHuntRequest(hunt=hunt_message(f"kh-{mark}-{n}"))),
        ("geo", "UpdateHunt", geo_pb2.UpdateHuntRequest(hunt=hunt, update_mask={"paths": ["name"]})),
        ("geo", "GetHunt", geo_pb2.GetHuntRequest(hunt_id=hunt_id)),
        ("geo", "UpsertCheckpoint", geo_pb2.UpsertCheckpointRequest(checkpoint=checkpoint_message(
            f"kc-{mark}-{n}", hunt_id=hunt_id, tag_id=f"kt-{mark}-{n}", lat=spot.lat, lon=spot.lon))),
        ("geo", "ListCheckpoints", geo_pb2.ListCheckpointsRequest(hunt_id=hunt_id)),
        ("geo", "DeactivateCheckpoint", geo_pb2.DeactivateCheckpointRequest(
            hunt_id=hunt_id, checkpoint_id=f"kc-{mark}-{n}-missing")),
        ("geo", "PutTile", geo_pb2.PutTileRequest(hunt_id=hunt_id, x=0, y=0, data=b"t", version=1)),
        ("geo", "RefreshTiles", geo_pb2.RefreshTilesRequest(hunt_id=hunt_id)),
        ("geo", "GetTile", geo_pb2.GetTileRequest(hunt_id=hunt_id, x=0, y=0)),
        ("geo", "GetTiles", geo_pb2.GetTilesRequest(hunt_id=hunt_id, cells=[geo_pb2.TileRef()])),
        ("geo", "CheckIn", geo_pb2.CheckInRequest(
            hunt_id=hunt_id, player_id=f"kg-{mark}-{n}", tag_id=spot.tag_id, location=here,
            accuracy_m=5.0, at=at)),
        ("geo", "CheckInStream", geo_pb2.CheckInStreamRequest(id=1, request=geo_pb2.CheckInRequest(
            hunt_id=hunt_id, player_id=f"kgs-{mark}-{n}", tag_id=spot.tag_id, location=here,
            accuracy_m=5.0, at=at))),
        ("geo", "UpdateLocation", geo_pb2.UpdateLocationRequest(
            hunt_id=hunt_id, player_id=player, location=here, accuracy_m=5.0, at=at)),
        ("geo", "GetPlayerLocation", geo_pb2.GetPlayerLocationRequest(player_id=player)),
        ("geo", "NearbyCheckpoints", geo_pb2.NearbyCheckpointsRequest(
            hunt_id=hunt_id, center=here, radius_m=500, limit=10)),
        ("geo", "NearbyPlayers", geo_pb2.NearbyPlayersRequest(
            hunt_id=hunt_id, center=here, radius_m=500, limit=10)),
    ]  # fmt: skip


def id_fields(message: Message, path: tuple = ()) -> list[tuple]:
    """Paths (field names, and indexes into repeated messages) of every id in
    `message`: its string fields named `*_id`, nested ones included."""
    found: list[tuple] = []
    for field in message.DESCRIPTOR.fields:
        if field.type == FieldDescriptor.TYPE_STRING and field.name.endswith("_id"):
            found.append((*path, field.name))
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            value = getattr(message, field.name)
            if field.is_repeated:
                for i, item in enumerate(value):
                    found += id_fields(item, (*path, field.name, i))
            elif message.HasField(field.name):
                found += id_fields(value, (*path, field.name))
    return found


def with_id(message: Message, path: tuple, value: str) -> Message:
    """A copy of `message` with the id at `path` set to `value`."""
    copy = type(message)()
    copy.CopyFrom(message)
    target = copy
    for step in path[:-1]:
        target = target[step] if isinstance(step, int) else getattr(target, step)
    setattr(target, path[-1], value)
    return copy


def declares_ids(descriptor, depth: int = 0) -> bool:
    """Whether a message type has an id field (`*_id`), nested ones included."""
    return any(
        (field.type == FieldDescriptor.TYPE_STRING and field.name.endswith("_id"))
        or (
            field.type == FieldDescriptor.TYPE_MESSAGE
            and depth < 3
            and declares_ids(field.message_type, depth + 1)
        )
        for field in descriptor.fields
    )


def test_the_key_traffic_covers_every_rpc_that_takes_an_id():
    """A new RPC with an id fails here until valid_traffic() sends it."""
    traffic = valid_traffic("h1", spots("h1", 1)[0], "m", 0)
    takes_ids = [
        (service, m.name)
        for service in APIS
        for m in methods(service)
        if declares_ids(m.input_type)
    ]
    assert sorted((service, name) for service, name, _ in traffic) == sorted(takes_ids)


async def redis_keys(stack: Stack, service: str) -> list[str]:
    """Every key in a service's Redis (each master's, on a cluster)."""
    client = rediskit.connect(stack.redis[service].url)
    try:
        return [key async for key in client.scan_iter(count=1000)]
    finally:
        await client.aclose()


async def test_no_bad_id_reached_a_redis_key(stack: Stack):
    mark = uuid.uuid4().hex[:8]
    hunt_id = f"keys-{mark}"
    checkpoints = spots(hunt_id, 1)
    await create_hunt(stack.geo(), hunt_id, checkpoints)
    channels = {service: stack.channel(service) for service in APIS}

    # Valid requests first: every service writes keys of this test's ids.
    traffic = valid_traffic(hunt_id, checkpoints[0], mark, 0)
    for service, name, message in traffic:
        code, details = await call(
            channels[service], service, name, message, metadata=token_for(service, name)
        )
        # Valid, so each hostile copy below is refused for its id alone.
        assert code in ALLOWED - {grpc.StatusCode.INVALID_ARGUMENT}, (service, name, code, details)

    # Then each of them again with one id at a time made hostile (fresh ids
    # otherwise, so no copy is a replay of another or spends a player's rate).
    hostile = []
    n = 0
    for index, (service, name, base) in enumerate(traffic):
        for path in id_fields(base):
            for bad in HOSTILE_IDS:
                n += 1
                fresh = valid_traffic(hunt_id, checkpoints[0], mark, n)[index][2]
                hostile.append((service, name, with_id(fresh, path, bad), path))
    assert hostile
    limit = asyncio.Semaphore(16)

    async def send(service: str, name: str, message: Message, path: tuple) -> None:
        async with limit:
            code, details = await call(
                channels[service], service, name, message, metadata=token_for(service, name)
            )
        assert code in ALLOWED, (service, name, path, code, details)

    await asyncio.gather(*(send(*h) for h in hostile))
    for process in stack.processes.values():
        assert process.poll() is None, "a service died"

    # Every service wrote keys of this test's valid ids (the leaderboard's
    # come from the relays, a moment later) ...
    async def marked_keys() -> dict[str, list[str]]:
        return {
            service: [k for k in await redis_keys(stack, service) if mark in k] for service in APIS
        }

    await eventually(
        marked_keys,
        until=lambda keys: all(keys.values()),
        timeout_s=20,
        interval_s=0.1,
        what="keys of this test's ids in every service's Redis",
    )
    # ... and no key, of this traffic or any before it, breaks the key rules.
    for service in APIS:
        keys = await redis_keys(stack, service)
        assert keys, f"{service}: no keys at all"
        for key in keys:
            assert KEY.fullmatch(key), f"{service}: key {key!r} breaks the key rules"
