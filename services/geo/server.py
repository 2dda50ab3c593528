"""The gRPC face of the geo service: validate, call, map.

Only this module converts between the protos and `services.geo.model`;
errors raised below (libs.errors kinds) become gRPC statuses in libs.rpc.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf.timestamp_pb2 import Timestamp

from libs import paging, validate
from libs.auth import ADMIN, INTERNAL, PUBLIC
from libs.cache import MISSING, TtlCache
from libs.errors import InvalidArgument, ResourceExhausted
from libs.server import Binding
from libs.timestamps import timestamp, timestamp_ms
from services.geo.model import (
    MAX_POINTS,
    Checkpoint,
    CheckpointInput,
    Grid,
    Hunt,
    HuntChanges,
    HuntStatus,
    NewHunt,
    TagStatus,
)
from services.geo.service import Geo
from treasure.common.v1 import common_pb2
from treasure.geo.v1 import geo_pb2, geo_pb2_grpc

#: The roles each RPC accepts (libs.auth); every RPC must be listed.
ROLES = {
    "CreateHunt": ADMIN,
    "UpdateHunt": ADMIN,
    "GetHunt": PUBLIC | INTERNAL,  # score and the leaderboard ask whether a hunt exists
    "ListHunts": PUBLIC | INTERNAL,  # the leaderboard lists the played hunts to warm their boards
    "UpsertCheckpoint": ADMIN,
    "ListCheckpoints": PUBLIC,
    "DeactivateCheckpoint": ADMIN,
    "PutTile": ADMIN,
    "RefreshTiles": ADMIN,
    "CheckIn": INTERNAL,
    "CheckInStream": INTERNAL,  # CheckIn, many calls on one stream (libs.rpc multiplexed)
    "UpdateLocation": PUBLIC,
    "GetPlayerLocation": PUBLIC,
    "NearbyCheckpoints": PUBLIC,
    "NearbyPlayers": PUBLIC,
    "GetTile": PUBLIC,
    "GetTiles": PUBLIC,
}

#: The stream methods that carry many calls of a unary method (libs.rpc).
MULTIPLEXED = {"CheckInStream": "CheckIn"}

MAX_NAME = 200
MAX_TILE_BYTES = 256 * 1024
MAX_CONTENT_TYPE = 100
DEFAULT_CONTENT_TYPE = "application/octet-stream"
MAX_SEARCH_RADIUS_M = 50_000.0
LOCATION_MAX_AHEAD = timedelta(seconds=30)
HUNT_MASK_PATHS = frozenset({"name", "starts_at", "ends_at", "status", "grid"})

_STATUS_IN: dict[geo_pb2.HuntStatus, HuntStatus] = {
    geo_pb2.HUNT_STATUS_DRAFT: HuntStatus.DRAFT,
    geo_pb2.HUNT_STATUS_PUBLISHED: HuntStatus.PUBLISHED,
    geo_pb2.HUNT_STATUS_CANCELLED: HuntStatus.CANCELLED,
}
_STATUS_OUT = {v: k for k, v in _STATUS_IN.items()}
_TAG_OUT = {
    TagStatus.FOUND: geo_pb2.TAG_STATUS_FOUND,
    TagStatus.UNKNOWN: geo_pb2.TAG_STATUS_UNKNOWN,
    TagStatus.INACTIVE: geo_pb2.TAG_STATUS_INACTIVE,
    TagStatus.UNKNOWN_HUNT: geo_pb2.TAG_STATUS_UNKNOWN_HUNT,
}


# -- proto -> domain (with validation) ------------------------------------------


def _status(field: str, value: geo_pb2.HuntStatus) -> HuntStatus:
    status = _STATUS_IN.get(value)
    if status is None:
        raise InvalidArgument(field, "must be DRAFT, PUBLISHED or CANCELLED")
    return status


def _grid(field: str, message: geo_pb2.TileGrid, present: bool) -> Grid:
    if not present:
        raise InvalidArgument(field, "is required")
    lat, lon = validate.require_point(f"{field}.origin", message.origin, message.HasField("origin"))
    size = validate.require_number(f"{field}.tile_size_m", message.tile_size_m, low=10, high=10_000)
    columns = validate.require_int(f"{field}.columns", message.columns, low=1, high=1000)
    rows = validate.require_int(f"{field}.rows", message.rows, low=1, high=1000)
    return Grid(lat, lon, size, columns, rows)


def _name(field: str, value: str) -> str:
    return validate.require_text(field, value, max_len=MAX_NAME)


def _window(hunt: geo_pb2.Hunt) -> tuple[datetime, datetime]:
    starts = validate.require_time("hunt.starts_at", hunt.starts_at, hunt.HasField("starts_at"))
    ends = validate.require_time("hunt.ends_at", hunt.ends_at, hunt.HasField("ends_at"))
    if ends <= starts:
        raise InvalidArgument("hunt.ends_at", "must be after starts_at")
    return starts, ends


def _new_hunt(request: geo_pb2.CreateHuntRequest) -> NewHunt:
    if not request.HasField("hunt"):
        raise InvalidArgument("hunt", "is required")
    h = request.hunt
    hunt_id = validate.require_id("hunt.hunt_id", h.hunt_id)
    name = _name("hunt.name", h.name)
    starts, ends = _window(h)
    status = _status("hunt.status", h.status)
    grid = _grid("hunt.grid", h.grid, h.HasField("grid"))
    return NewHunt(hunt_id, name, starts, ends, status, grid)


def _hunt_changes(request: geo_pb2.UpdateHuntRequest) -> tuple[str, HuntChanges]:
    if not request.HasField("hunt"):
        raise InvalidArgument("hunt", "is required")
    h = request.hunt
    hunt_id = validate.require_id("hunt.hunt_id", h.hunt_id)
    paths = set(request.update_mask.paths) or set(HUNT_MASK_PATHS)
    unknown = sorted(paths - HUNT_MASK_PATHS)
    if unknown:
        raise InvalidArgument(
            "update_mask", f"unknown path {unknown[0]!r}; allowed: {sorted(HUNT_MASK_PATHS)}"
        )
    starts = ends = None
    if "starts_at" in paths and "ends_at" in paths:
        starts, ends = _window(h)
    elif "starts_at" in paths:
        starts = validate.require_time("hunt.starts_at", h.starts_at, h.HasField("starts_at"))
    elif "ends_at" in paths:
        ends = validate.require_time("hunt.ends_at", h.ends_at, h.HasField("ends_at"))
    return hunt_id, HuntChanges(
        name=_name("hunt.name", h.name) if "name" in paths else None,
        starts_at=starts,
        ends_at=ends,
        status=_status("hunt.status", h.status) if "status" in paths else None,
        grid=_grid("hunt.grid", h.grid, h.HasField("grid")) if "grid" in paths else None,
    )


def _checkpoint_input(request: geo_pb2.UpsertCheckpointRequest) -> CheckpointInput:
    if not request.HasField("checkpoint"):
        raise InvalidArgument("checkpoint", "is required")
    c = request.checkpoint
    checkpoint_id = validate.require_id("checkpoint.checkpoint_id", c.checkpoint_id)
    hunt_id = validate.require_id("checkpoint.hunt_id", c.hunt_id)
    tag_id = validate.require_id("checkpoint.tag_id", c.tag_id)
    name = _name("checkpoint.name", c.name)
    lat, lon = validate.require_point("checkpoint.location", c.location, c.HasField("location"))
    radius = validate.require_number("checkpoint.radius_m", c.radius_m, low=1, high=1000)
    points = validate.require_int("checkpoint.points", c.points, low=0, high=MAX_POINTS)
    bonus = validate.require_int(
        "checkpoint.first_finder_bonus", c.first_finder_bonus, low=0, high=MAX_POINTS
    )
    return CheckpointInput(checkpoint_id, hunt_id, tag_id, name, lat, lon, radius, points, bonus)


def _search_radius(value: float) -> float:
    radius = validate.require_number("radius_m", value, high=MAX_SEARCH_RADIUS_M)
    if radius <= 0:
        raise InvalidArgument("radius_m", "must be > 0")
    return radius


def _accuracy(value: float) -> float:
    return validate.require_number("accuracy_m", value, low=0)


def _cell(x: int, y: int) -> None:
    validate.require_int("x", x, low=0)
    validate.require_int("y", y, low=0)


def _cursor_after(token: str, **scope: str) -> str:
    cursor = paging.decode(token, keys=("after", *scope))
    if cursor is None:
        return ""
    after = cursor["after"]
    if not isinstance(after, str) or not validate.is_id(after):
        raise InvalidArgument("page_token", "is not a valid page token")
    for key, value in scope.items():
        if cursor[key] != value:
            raise InvalidArgument("page_token", f"belongs to another {key}")
    return after


# -- domain -> proto ------------------------------------------------------------


def hunt_pb(hunt: Hunt) -> geo_pb2.Hunt:
    g = hunt.grid
    return geo_pb2.Hunt(
        hunt_id=hunt.hunt_id,
        name=hunt.name,
        starts_at=timestamp(hunt.starts_at),
        ends_at=timestamp(hunt.ends_at),
        status=_STATUS_OUT[hunt.status],
        grid=geo_pb2.TileGrid(
            origin=common_pb2.GeoPoint(lat=g.origin_lat, lon=g.origin_lon),
            tile_size_m=g.tile_size_m,
            columns=g.columns,
            rows=g.rows,
        ),
        created_at=timestamp(hunt.created_at),
        updated_at=timestamp(hunt.updated_at),
    )


def checkpoint_pb(cp: Checkpoint) -> geo_pb2.Checkpoint:
    return geo_pb2.Checkpoint(
        checkpoint_id=cp.checkpoint_id,
        hunt_id=cp.hunt_id,
        tag_id=cp.tag_id,
        name=cp.name,
        location=common_pb2.GeoPoint(lat=cp.lat, lon=cp.lon),
        radius_m=cp.radius_m,
        points=cp.points,
        first_finder_bonus=cp.first_finder_bonus,
        active=cp.active,
    )


#: The most cells one GetTiles asks for (a map's view of 8 x 8 tiles).
MAX_TILES_PER_CALL = 64
#: What a GetTiles answer takes beside its tiles' data (64 cells' fields).
ANSWER_MARGIN_BYTES = 16 * 1024


class _ProtoMemo:
    """Hunt and checkpoint protos built once per catalog version (CheckIn is
    hot); bounded like every in-process cache."""

    def __init__(self, max_entries: int = 4096, ttl_s: float = 60.0) -> None:
        self._hunts: TtlCache[tuple[str, int], geo_pb2.Hunt] = TtlCache(max_entries, ttl_s)
        self._checkpoints: TtlCache[tuple[str, int], geo_pb2.Checkpoint] = TtlCache(
            max_entries, ttl_s
        )
        self._refreshed_at: tuple[datetime, Timestamp] | None = None

    def hunt(self, hunt: Hunt) -> geo_pb2.Hunt:
        key = (hunt.hunt_id, hunt.version)
        pb = self._hunts.get(key)
        if pb is MISSING:
            pb = hunt_pb(hunt)
            self._hunts.put(key, pb)
        return pb

    def refreshed_at(self, at: datetime) -> Timestamp:
        """The view's refresh time as a proto: the same for every GetTile of
        one refresh, so built once per refresh."""
        if self._refreshed_at is None or self._refreshed_at[0] != at:
            self._refreshed_at = (at, timestamp(at))
        return self._refreshed_at[1]

    def checkpoint(self, cp: Checkpoint) -> geo_pb2.Checkpoint:
        key = (cp.tag_id, cp.version)
        pb = self._checkpoints.get(key)
        if pb is MISSING:
            pb = checkpoint_pb(cp)
            self._checkpoints.put(key, pb)
        return pb


class GeoServicer(geo_pb2_grpc.GeoServiceServicer):
    def __init__(self, geo: Geo, max_message_bytes: int = 1 << 20) -> None:
        self._geo = geo
        #: The tile data one GetTiles answer may carry: the message limit, less
        #: what the rest of the answer takes.
        self._max_tiles_bytes = max_message_bytes - ANSWER_MARGIN_BYTES
        self._memo = _ProtoMemo()

    # -- catalog --------------------------------------------------------------

    async def CreateHunt(self, request, context) -> geo_pb2.CreateHuntResponse:
        hunt = await self._geo.create_hunt(_new_hunt(request))
        return geo_pb2.CreateHuntResponse(hunt=hunt_pb(hunt))

    async def UpdateHunt(self, request, context) -> geo_pb2.UpdateHuntResponse:
        hunt_id, changes = _hunt_changes(request)
        hunt = await self._geo.update_hunt(hunt_id, changes)
        return geo_pb2.UpdateHuntResponse(hunt=hunt_pb(hunt))

    async def GetHunt(self, request, context) -> geo_pb2.GetHuntResponse:
        hunt = await self._geo.require_hunt(validate.require_id("hunt_id", request.hunt_id))
        return geo_pb2.GetHuntResponse(hunt=hunt_pb(hunt))

    async def ListHunts(self, request, context) -> geo_pb2.ListHuntsResponse:
        size = validate.page_size("page_size", request.page_size, default=20, maximum=100)
        after = _cursor_after(request.page_token)
        hunts = await self._geo.list_hunts(after, size + 1)
        token = paging.encode({"after": hunts[size - 1].hunt_id}) if len(hunts) > size else ""
        return geo_pb2.ListHuntsResponse(
            hunts=[hunt_pb(h) for h in hunts[:size]], next_page_token=token
        )

    async def UpsertCheckpoint(self, request, context) -> geo_pb2.UpsertCheckpointResponse:
        cp, created = await self._geo.upsert_checkpoint(_checkpoint_input(request))
        return geo_pb2.UpsertCheckpointResponse(checkpoint=checkpoint_pb(cp), created=created)

    async def ListCheckpoints(self, request, context) -> geo_pb2.ListCheckpointsResponse:
        hunt_id = validate.require_id("hunt_id", request.hunt_id)
        size = validate.page_size("page_size", request.page_size, default=100, maximum=500)
        after = _cursor_after(request.page_token, hunt=hunt_id)
        cps = await self._geo.list_checkpoints(
            hunt_id, include_inactive=request.include_inactive, after=after, limit=size + 1
        )
        token = ""
        if len(cps) > size:
            token = paging.encode({"after": cps[size - 1].checkpoint_id, "hunt": hunt_id})
        return geo_pb2.ListCheckpointsResponse(
            checkpoints=[checkpoint_pb(c) for c in cps[:size]], next_page_token=token
        )

    async def DeactivateCheckpoint(self, request, context) -> geo_pb2.DeactivateCheckpointResponse:
        hunt_id = validate.require_id("hunt_id", request.hunt_id)
        checkpoint_id = validate.require_id("checkpoint_id", request.checkpoint_id)
        cp = await self._geo.deactivate_checkpoint(hunt_id, checkpoint_id)
        return geo_pb2.DeactivateCheckpointResponse(checkpoint=checkpoint_pb(cp))

    # -- tiles ----------------------------------------------------------------

    async def PutTile(self, request, context) -> geo_pb2.PutTileResponse:
        hunt_id = validate.require_id("hunt_id", request.hunt_id)
        _cell(request.x, request.y)
        if len(request.data) > MAX_TILE_BYTES:
            raise InvalidArgument("data", f"must be at most {MAX_TILE_BYTES} bytes")
        version = validate.require_int("version", request.version, low=1)
        content_type = validate.require_text(
            "content_type", request.content_type, max_len=MAX_CONTENT_TYPE, required=False
        )
        stored = await self._geo.put_tile(
            hunt_id, request.x, request.y, request.data, version,
            content_type or DEFAULT_CONTENT_TYPE,
        )  # fmt: skip
        return geo_pb2.PutTileResponse(stored_version=stored)

    async def RefreshTiles(self, request, context) -> geo_pb2.RefreshTilesResponse:
        await self._geo.require_hunt(validate.require_id("hunt_id", request.hunt_id))
        result = await self._geo.refresh_tiles()
        return geo_pb2.RefreshTilesResponse(
            refreshed=result.refreshed, refreshed_at=timestamp(result.refreshed_at)
        )

    async def GetTile(self, request, context) -> geo_pb2.GetTileResponse:
        hunt_id = validate.require_id("hunt_id", request.hunt_id)
        _cell(request.x, request.y)
        known = validate.require_int("known_version", request.known_version, low=0)
        read = await self._geo.get_tile(hunt_id, request.x, request.y)
        tile = read.tile
        assert tile is not None  # get_tile raises NotFound otherwise
        if known == tile.version:
            return geo_pb2.GetTileResponse(
                not_modified=True,
                version=tile.version,
                content_type=tile.content_type,
                view_refreshed_at=self._memo.refreshed_at(read.refreshed_at),
            )
        return geo_pb2.GetTileResponse(
            version=tile.version,
            data=tile.data,
            content_type=tile.content_type,
            view_refreshed_at=self._memo.refreshed_at(read.refreshed_at),
        )

    async def GetTiles(self, request, context) -> geo_pb2.GetTilesResponse:
        hunt_id = validate.require_id("hunt_id", request.hunt_id)
        cells = request.cells
        if not 1 <= len(cells) <= MAX_TILES_PER_CALL:
            raise InvalidArgument("cells", f"must hold 1 to {MAX_TILES_PER_CALL} cells")
        asked: set[tuple[int, int]] = set()
        for i, cell in enumerate(cells):
            validate.require_int(f"cells[{i}].x", cell.x, low=0)
            validate.require_int(f"cells[{i}].y", cell.y, low=0)
            validate.require_int(f"cells[{i}].known_version", cell.known_version, low=0)
            if (cell.x, cell.y) in asked:
                raise InvalidArgument(f"cells[{i}]", "asks for a cell asked before")
            asked.add((cell.x, cell.y))
        reads = await self._geo.get_tiles(hunt_id, [(cell.x, cell.y) for cell in cells])
        carried = sum(
            len(read.tile.data)
            for cell, read in zip(cells, reads, strict=True)
            if read.tile is not None and read.tile.version != cell.known_version
        )
        if carried > self._max_tiles_bytes:
            raise ResourceExhausted(
                f"the tiles asked for hold {carried} bytes, more than one answer carries "
                f"({self._max_tiles_bytes}): ask for fewer cells, or GetTile for the large ones",
                reason="ANSWER_TOO_LARGE",
            )
        answers = []
        for cell, read in zip(cells, reads, strict=True):
            tile = read.tile
            if tile is None:
                answers.append(geo_pb2.TileAnswer(x=cell.x, y=cell.y))
            elif cell.known_version == tile.version:
                answers.append(geo_pb2.TileAnswer(
                    x=cell.x, y=cell.y, found=True, not_modified=True, version=tile.version,
                    content_type=tile.content_type))  # fmt: skip
            else:
                answers.append(geo_pb2.TileAnswer(
                    x=cell.x, y=cell.y, found=True, version=tile.version, data=tile.data,
                    content_type=tile.content_type))  # fmt: skip
        # The oldest refresh any answer is of: tiles put after it may be missing.
        refreshed_at = min(read.refreshed_at for read in reads)
        return geo_pb2.GetTilesResponse(
            tiles=answers, view_refreshed_at=self._memo.refreshed_at(refreshed_at)
        )

    # -- check-in and locations -----------------------------------------------

    async def CheckIn(self, request, context) -> geo_pb2.CheckInResponse:
        hunt_id = validate.require_id("hunt_id", request.hunt_id)
        player_id = validate.require_id("player_id", request.player_id)
        tag_id = validate.require_id("tag_id", request.tag_id)
        lat, lon = validate.require_point(
            "location", request.location, request.HasField("location")
        )
        accuracy = _accuracy(request.accuracy_m)
        at = validate.require_time("at", request.at, request.HasField("at"))
        result = await self._geo.check_in(
            hunt_id, player_id, tag_id, lat, lon, accuracy, at.timestamp()
        )
        if result.checkpoint is None or result.hunt is None:
            return geo_pb2.CheckInResponse(tag_status=_TAG_OUT[result.tag_status])
        return geo_pb2.CheckInResponse(
            tag_status=_TAG_OUT[result.tag_status],
            checkpoint=self._memo.checkpoint(result.checkpoint),
            hunt=self._memo.hunt(result.hunt),
            distance_m=result.distance_m,
            allowed_m=result.allowed_m,
            in_range=result.in_range,
        )

    def CheckInStream(self, request_iterator, context):
        """Never called: libs.rpc serves this stream as many CheckIn calls
        (MULTIPLEXED), each through CheckIn above."""
        raise NotImplementedError("CheckInStream is served by libs.rpc as CheckIn calls")

    async def UpdateLocation(self, request, context) -> geo_pb2.UpdateLocationResponse:
        hunt_id = validate.require_id("hunt_id", request.hunt_id)
        player_id = validate.require_id("player_id", request.player_id)
        lat, lon = validate.require_point(
            "location", request.location, request.HasField("location")
        )
        accuracy = _accuracy(request.accuracy_m)
        at_s = None
        if request.HasField("at"):
            now = datetime.fromtimestamp(self._geo.now(), UTC)
            at_s = validate.bounded_time(
                "at", request.at, now=now, max_ahead=LOCATION_MAX_AHEAD
            ).timestamp()
        await self._geo.update_location(hunt_id, player_id, lat, lon, accuracy, at_s)
        return geo_pb2.UpdateLocationResponse()

    async def GetPlayerLocation(self, request, context) -> geo_pb2.GetPlayerLocationResponse:
        seen = await self._geo.player_location(validate.require_id("player_id", request.player_id))
        return geo_pb2.GetPlayerLocationResponse(
            location=geo_pb2.PlayerLocation(
                hunt_id=seen.hunt_id,
                player_id=seen.player_id,
                location=common_pb2.GeoPoint(lat=seen.lat, lon=seen.lon),
                accuracy_m=seen.accuracy_m,
                seen_at=timestamp_ms(seen.seen_ms),
            )
        )

    async def NearbyCheckpoints(self, request, context) -> geo_pb2.NearbyCheckpointsResponse:
        hunt_id = validate.require_id("hunt_id", request.hunt_id)
        lat, lon = validate.require_point("center", request.center, request.HasField("center"))
        radius = _search_radius(request.radius_m)
        limit = validate.page_size("limit", request.limit, default=50, maximum=200)
        found = await self._geo.nearby_checkpoints(hunt_id, lat, lon, radius, limit)
        return geo_pb2.NearbyCheckpointsResponse(
            checkpoints=[
                geo_pb2.NearbyCheckpoint(
                    checkpoint=checkpoint_pb(n.checkpoint), distance_m=n.distance_m
                )
                for n in found
            ]
        )

    async def NearbyPlayers(self, request, context) -> geo_pb2.NearbyPlayersResponse:
        hunt_id = validate.require_id("hunt_id", request.hunt_id)
        lat, lon = validate.require_point("center", request.center, request.HasField("center"))
        radius = _search_radius(request.radius_m)
        limit = validate.page_size("limit", request.limit, default=50, maximum=200)
        found = await self._geo.nearby_players(hunt_id, lat, lon, radius, limit)
        return geo_pb2.NearbyPlayersResponse(
            players=[
                geo_pb2.NearbyPlayer(
                    player_id=p.player_id,
                    location=common_pb2.GeoPoint(lat=p.lat, lon=p.lon),
                    distance_m=p.distance_m,
                )
                for p in found
            ]
        )


def binding(servicer: GeoServicer) -> Binding:
    return Binding(
        descriptor=geo_pb2.DESCRIPTOR.services_by_name["GeoService"],
        add_to_server=geo_pb2_grpc.add_GeoServiceServicer_to_server,
        servicer=servicer,
        roles=ROLES,
        multiplexed=MULTIPLEXED,
    )
