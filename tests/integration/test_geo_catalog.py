"""The geo catalog through gRPC: hunts, checkpoints, their errors, roles and
every validation rule (real Postgres and Redis)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from google.rpc import error_details_pb2, status_pb2

from libs.timestamps import timestamp
from tests.support.geo import create_hunt, status_of, upsert_checkpoint
from tools.inprocess import checkpoint_message, geo_service, hunt_message, point
from treasure.geo.v1 import geo_pb2


@pytest.fixture
async def geo(pg_dsn, redis_urls):
    async with geo_service(pg_dsn, redis_urls["geo"]) as running:
        yield running


def _violation(err: grpc.aio.AioRpcError) -> str:
    trailers = dict(err.trailing_metadata())
    status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    bad = error_details_pb2.BadRequest()
    for detail in status.details:
        if detail.Unpack(bad):
            return bad.field_violations[0].field
    raise AssertionError("no BadRequest detail")


async def test_hunt_lifecycle(geo):
    created = await create_hunt(geo, "h1", name="Festival")
    assert created.hunt_id == "h1" and created.name == "Festival"
    assert created.status == geo_pb2.HUNT_STATUS_PUBLISHED
    assert created.grid.columns == 10 and created.HasField("created_at")

    got = (await geo.client.GetHunt(geo_pb2.GetHuntRequest(hunt_id="h1"))).hunt
    assert got == created

    # Only the masked field changes; the answer and later reads agree.
    changed = geo_pb2.Hunt(hunt_id="h1", name="Festival II", status=geo_pb2.HUNT_STATUS_CANCELLED)
    reply = await geo.admin.UpdateHunt(
        geo_pb2.UpdateHuntRequest(hunt=changed, update_mask=FieldMask(paths=["name"]))
    )
    assert reply.hunt.name == "Festival II"
    assert reply.hunt.status == geo_pb2.HUNT_STATUS_PUBLISHED
    got = (await geo.client.GetHunt(geo_pb2.GetHuntRequest(hunt_id="h1"))).hunt
    assert got.name == "Festival II" and got.starts_at == created.starts_at

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await geo.admin.CreateHunt(geo_pb2.CreateHuntRequest(hunt=hunt_message("h1")))
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert (
        await status_of(geo.client.GetHunt(geo_pb2.GetHuntRequest(hunt_id="nope")))
        == grpc.StatusCode.NOT_FOUND
    )
    assert (
        await status_of(geo.admin.UpdateHunt(geo_pb2.UpdateHuntRequest(hunt=hunt_message("nope"))))
        == grpc.StatusCode.NOT_FOUND
    )


async def test_update_keeps_the_window_valid(geo):
    await create_hunt(geo, "h1")
    early = geo_pb2.Hunt(hunt_id="h1", ends_at=timestamp(datetime(2001, 1, 1, tzinfo=UTC)))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await geo.admin.UpdateHunt(
            geo_pb2.UpdateHuntRequest(hunt=early, update_mask=FieldMask(paths=["ends_at"]))
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _violation(err.value) == "hunt.ends_at"


async def test_list_hunts_pages_in_id_order(geo):
    for hunt_id in ("h3", "h1", "h2", "h5", "h4"):
        await create_hunt(geo, hunt_id)
    seen, token = [], ""
    while True:
        reply = await geo.client.ListHunts(geo_pb2.ListHuntsRequest(page_size=2, page_token=token))
        seen.append([h.hunt_id for h in reply.hunts])
        token = reply.next_page_token
        if not token:
            break
    assert seen == [["h1", "h2"], ["h3", "h4"], ["h5"]]
    assert (
        await status_of(geo.client.ListHunts(geo_pb2.ListHuntsRequest(page_token="garbage!")))
        == grpc.StatusCode.INVALID_ARGUMENT
    )


async def test_checkpoints_upsert_list_deactivate(geo):
    await create_hunt(geo, "h1")
    first = await geo.admin.UpsertCheckpoint(
        geo_pb2.UpsertCheckpointRequest(checkpoint=checkpoint_message("c1", tag_id="t1"))
    )
    assert first.created and first.checkpoint.active and first.checkpoint.tag_id == "t1"
    again = await geo.admin.UpsertCheckpoint(
        geo_pb2.UpsertCheckpointRequest(checkpoint=checkpoint_message("c1", tag_id="t1", points=7))
    )
    assert not again.created and again.checkpoint.points == 7
    for i in range(2, 6):
        await upsert_checkpoint(geo, f"c{i}", tag_id=f"t{i}")

    # A tag id is unique across all hunts.
    await create_hunt(geo, "h2")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await upsert_checkpoint(geo, "other", hunt_id="h2", tag_id="t1")
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    # The hunt must exist.
    assert (
        await status_of(upsert_checkpoint(geo, "c9", hunt_id="nope", tag_id="t9"))
        == grpc.StatusCode.NOT_FOUND
    )

    reply = await geo.admin.DeactivateCheckpoint(
        geo_pb2.DeactivateCheckpointRequest(hunt_id="h1", checkpoint_id="c3")
    )
    assert not reply.checkpoint.active
    assert (
        await status_of(
            geo.admin.DeactivateCheckpoint(
                geo_pb2.DeactivateCheckpointRequest(hunt_id="h1", checkpoint_id="zz")
            )
        )
        == grpc.StatusCode.NOT_FOUND
    )

    async def listed(include_inactive: bool) -> list[list[str]]:
        pages, token = [], ""
        while True:
            page = await geo.client.ListCheckpoints(
                geo_pb2.ListCheckpointsRequest(
                    hunt_id="h1", include_inactive=include_inactive, page_size=2, page_token=token
                )
            )
            pages.append([c.checkpoint_id for c in page.checkpoints])
            token = page.next_page_token
            if not token:
                return pages

    assert await listed(False) == [["c1", "c2"], ["c4", "c5"]]
    assert await listed(True) == [["c1", "c2"], ["c3", "c4"], ["c5"]]
    # Upserting re-activates.
    await upsert_checkpoint(geo, "c3", tag_id="t3")
    assert await listed(False) == [["c1", "c2"], ["c3", "c4"], ["c5"]]
    assert (
        await status_of(geo.client.ListCheckpoints(geo_pb2.ListCheckpointsRequest(hunt_id="nope")))
        == grpc.StatusCode.NOT_FOUND
    )
    empty = await geo.client.ListCheckpoints(geo_pb2.ListCheckpointsRequest(hunt_id="h2"))
    assert list(empty.checkpoints) == [] and empty.next_page_token == ""


async def test_roles(geo):
    await create_hunt(geo, "h1")
    check_in = geo_pb2.CheckInRequest(
        hunt_id="h1",
        player_id="p1",
        tag_id="t1",
        location=point(38.7, -9.1),
        at=timestamp(datetime.now(UTC)),
    )
    assert await status_of(geo.client.CheckIn(check_in)) == grpc.StatusCode.PERMISSION_DENIED
    assert await status_of(geo.admin.CheckIn(check_in)) == grpc.StatusCode.PERMISSION_DENIED
    assert await status_of(geo.service.CheckIn(check_in)) == grpc.StatusCode.OK
    put = geo_pb2.PutTileRequest(hunt_id="h1", x=0, y=0, data=b"png", version=1)
    assert await status_of(geo.client.PutTile(put)) == grpc.StatusCode.PERMISSION_DENIED
    assert await status_of(geo.service.PutTile(put)) == grpc.StatusCode.PERMISSION_DENIED
    assert await status_of(geo.admin.PutTile(put)) == grpc.StatusCode.OK
    create = geo_pb2.CreateHuntRequest(hunt=hunt_message("h2"))
    assert await status_of(geo.client.CreateHunt(create)) == grpc.StatusCode.PERMISSION_DENIED
    refresh = geo_pb2.RefreshTilesRequest(hunt_id="h1")
    assert await status_of(geo.client.RefreshTiles(refresh)) == grpc.StatusCode.PERMISSION_DENIED


def _hunt(**changes) -> geo_pb2.Hunt:
    hunt = hunt_message("hv")
    for name, value in changes.items():
        if value is None:
            hunt.ClearField(name)
        elif name in ("grid", "starts_at", "ends_at"):
            getattr(hunt, name).CopyFrom(value)
        else:
            setattr(hunt, name, value)
    return hunt


def _grid(**changes) -> geo_pb2.TileGrid:
    grid = geo_pb2.TileGrid(origin=point(38.7, -9.1), tile_size_m=100, columns=10, rows=10)
    for name, value in changes.items():
        if name == "origin":
            grid.origin.CopyFrom(value)
        else:
            setattr(grid, name, value)
    return grid


_NOW = datetime.now(UTC)

HUNT_RULES = [
    (_hunt(hunt_id=""), "hunt.hunt_id"),
    (_hunt(hunt_id="bad id"), "hunt.hunt_id"),
    (_hunt(hunt_id="-leading"), "hunt.hunt_id"),
    (_hunt(hunt_id="x" * 65), "hunt.hunt_id"),
    (_hunt(name=""), "hunt.name"),
    (_hunt(name="n" * 201), "hunt.name"),
    (_hunt(starts_at=None), "hunt.starts_at"),
    (_hunt(ends_at=None), "hunt.ends_at"),
    (_hunt(ends_at=timestamp(_NOW - timedelta(days=2))), "hunt.ends_at"),
    (_hunt(status=geo_pb2.HUNT_STATUS_UNSPECIFIED), "hunt.status"),
    (_hunt(status=42), "hunt.status"),
    (_hunt(grid=None), "hunt.grid"),
    (_hunt(grid=_grid(origin=point(91, 0))), "hunt.grid.origin.lat"),
    (_hunt(grid=_grid(origin=point(0, -180.5))), "hunt.grid.origin.lon"),
    (_hunt(grid=_grid(origin=point(float("nan"), 0))), "hunt.grid.origin.lat"),
    (_hunt(grid=_grid(tile_size_m=9.9)), "hunt.grid.tile_size_m"),
    (_hunt(grid=_grid(tile_size_m=10_001)), "hunt.grid.tile_size_m"),
    (_hunt(grid=_grid(columns=0)), "hunt.grid.columns"),
    (_hunt(grid=_grid(rows=1001)), "hunt.grid.rows"),
]


async def test_create_hunt_rules(geo):
    for hunt, field in HUNT_RULES:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await geo.admin.CreateHunt(geo_pb2.CreateHuntRequest(hunt=hunt))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
        assert _violation(err.value) == field


CHECKPOINT_RULES = [
    ({"checkpoint_id": ""}, "checkpoint.checkpoint_id"),
    ({"hunt_id": "h{1}"}, "checkpoint.hunt_id"),
    ({"tag_id": "t:1"}, "checkpoint.tag_id"),
    ({"name": ""}, "checkpoint.name"),
    ({"lat": 90.0001}, "checkpoint.location.lat"),
    ({"lon": 181}, "checkpoint.location.lon"),
    ({"radius_m": 0.5}, "checkpoint.radius_m"),
    ({"radius_m": 1000.5}, "checkpoint.radius_m"),
    ({"points": -1}, "checkpoint.points"),
    ({"first_finder_bonus": -1}, "checkpoint.first_finder_bonus"),
    # More than score's Unlock accepts: such a scan could never be applied.
    ({"points": 1_000_001}, "checkpoint.points"),
    ({"first_finder_bonus": 1_000_001}, "checkpoint.first_finder_bonus"),
    # Off the hunt's tile grid (a Porto checkpoint in a Lisbon hunt).
    ({"lat": 41.1406, "lon": -8.6132}, "checkpoint.location"),
]


async def test_checkpoint_rules(geo):
    await create_hunt(geo, "h1")
    for changes, field in CHECKPOINT_RULES:
        message = checkpoint_message(**{"checkpoint_id": "c1", **changes})
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await geo.admin.UpsertCheckpoint(geo_pb2.UpsertCheckpointRequest(checkpoint=message))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
        assert _violation(err.value) == field
    message = checkpoint_message("c1")
    message.ClearField("location")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await geo.admin.UpsertCheckpoint(geo_pb2.UpsertCheckpointRequest(checkpoint=message))
    assert _violation(err.value) == "checkpoint.location"
    listed = await geo.client.ListCheckpoints(
        geo_pb2.ListCheckpointsRequest(hunt_id="h1", include_inactive=True)
    )
    assert list(listed.checkpoints) == []  # nothing refused was written


async def test_update_mask_rules(geo):
    await create_hunt(geo, "h1")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await geo.admin.UpdateHunt(
            geo_pb2.UpdateHuntRequest(
                hunt=geo_pb2.Hunt(hunt_id="h1"), update_mask=FieldMask(paths=["hunt_id"])
            )
        )
    assert _violation(err.value) == "update_mask"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await geo.admin.UpdateHunt(
            geo_pb2.UpdateHuntRequest(
                hunt=geo_pb2.Hunt(hunt_id="h1", name=""), update_mask=FieldMask(paths=["name"])
            )
        )
    assert _violation(err.value) == "hunt.name"


async def _field_of(call) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return _violation(err.value)


async def test_request_rules(geo):
    await create_hunt(geo, "h1", columns=4, rows=3)
    now = timestamp(datetime.now(UTC))
    here = point(38.7, -9.1)
    service, client, admin = geo.service, geo.client, geo.admin

    def check_in(**kw):
        fields = dict(hunt_id="h1", player_id="p1", tag_id="t1", location=here, at=now)
        fields.update(kw)
        return geo_pb2.CheckInRequest(**{k: v for k, v in fields.items() if v is not None})

    cases = [
        (service.CheckIn(check_in(hunt_id="")), "hunt_id"),
        (service.CheckIn(check_in(player_id="p 1")), "player_id"),
        (service.CheckIn(check_in(tag_id="t/1")), "tag_id"),
        (service.CheckIn(check_in(location=None)), "location"),
        (service.CheckIn(check_in(location=point(-90.5, 0))), "location.lat"),
        (service.CheckIn(check_in(accuracy_m=-1)), "accuracy_m"),
        (service.CheckIn(check_in(accuracy_m=float("inf"))), "accuracy_m"),
        (service.CheckIn(check_in(at=None)), "at"),
        (
            client.UpdateLocation(
                geo_pb2.UpdateLocationRequest(
                    hunt_id="h1",
                    player_id="p1",
                    location=here,
                    at=timestamp(datetime.now(UTC) + timedelta(seconds=90)),
                )
            ),
            "at",
        ),
        (
            client.UpdateLocation(geo_pb2.UpdateLocationRequest(hunt_id="h1", player_id="p1")),
            "location",
        ),
        (client.GetPlayerLocation(geo_pb2.GetPlayerLocationRequest(player_id="")), "player_id"),
        (
            client.NearbyPlayers(
                geo_pb2.NearbyPlayersRequest(hunt_id="h1", center=here, radius_m=0)
            ),
            "radius_m",
        ),
        (
            client.NearbyCheckpoints(
                geo_pb2.NearbyCheckpointsRequest(hunt_id="h1", center=here, radius_m=50_001)
            ),
            "radius_m",
        ),
        (
            client.NearbyCheckpoints(
                geo_pb2.NearbyCheckpointsRequest(hunt_id="h1", center=here, radius_m=10, limit=201)
            ),
            "limit",
        ),
        (
            client.NearbyCheckpoints(geo_pb2.NearbyCheckpointsRequest(hunt_id="h1", radius_m=10)),
            "center",
        ),
        (admin.PutTile(geo_pb2.PutTileRequest(hunt_id="h1", x=4, y=0, data=b"d", version=1)), "x"),
        (admin.PutTile(geo_pb2.PutTileRequest(hunt_id="h1", x=0, y=3, data=b"d", version=1)), "y"),
        (admin.PutTile(geo_pb2.PutTileRequest(hunt_id="h1", x=-1, y=0, data=b"d", version=1)), "x"),
        (
            admin.PutTile(geo_pb2.PutTileRequest(hunt_id="h1", x=0, y=0, data=b"d", version=0)),
            "version",
        ),
        (
            admin.PutTile(
                geo_pb2.PutTileRequest(
                    hunt_id="h1", x=0, y=0, data=b"d" * (256 * 1024 + 1), version=1
                )
            ),
            "data",
        ),
        (
            admin.PutTile(
                geo_pb2.PutTileRequest(
                    hunt_id="h1", x=0, y=0, data=b"d", version=1, content_type="c" * 101
                )
            ),
            "content_type",
        ),
        (client.GetTile(geo_pb2.GetTileRequest(hunt_id="h1", x=0, y=3)), "y"),
        (
            client.GetTile(geo_pb2.GetTileRequest(hunt_id="h1", x=0, y=0, known_version=-1)),
            "known_version",
        ),
        (client.GetTile(geo_pb2.GetTileRequest(hunt_id="", x=0, y=0)), "hunt_id"),
        (admin.RefreshTiles(geo_pb2.RefreshTilesRequest(hunt_id="")), "hunt_id"),
        (
            client.ListCheckpoints(geo_pb2.ListCheckpointsRequest(hunt_id="h1", page_size=501)),
            "page_size",
        ),
        (client.ListHunts(geo_pb2.ListHuntsRequest(page_size=101)), "page_size"),
        (
            admin.DeactivateCheckpoint(geo_pb2.DeactivateCheckpointRequest(hunt_id="h1")),
            "checkpoint_id",
        ),
    ]
    for call, field in cases:
        assert await _field_of(call) == field
    # Exactly 256 KiB is allowed.
    put = geo_pb2.PutTileRequest(hunt_id="h1", x=3, y=2, data=b"d" * (256 * 1024), version=1)
    assert (await admin.PutTile(put)).stored_version == 1
