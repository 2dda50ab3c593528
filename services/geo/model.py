"""The geo service's domain values and geometry, free of any transport or storage.

`store.py` and `cache.py` return these small frozen dataclasses; `server.py`
maps them to and from the protos. Distances are great-circle distances
(haversine, `libs.geometry`) on a sphere of radius 6371008.8 m.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from libs import errors
from libs.geometry import EARTH_RADIUS_M

#: A restarted replica warms the hunts that run now and those starting within
#: this: geo its catalog, the leaderboard their boards.
WARM_LEAD = timedelta(hours=1)

#: A scan may be this much further than the radius when the GPS says it is imprecise.
MAX_ACCURACY_ALLOWANCE_M = 50.0
#: Players seen within this many seconds are "live" (NearbyPlayers).
LIVE_WINDOW_S = 60
#: The last location of a player is kept this long after the sighting.
LOCATION_TTL_S = 30
#: A checkpoint's points and first-finder bonus are at most this. Score's
#: Unlock takes its bound from here, so a scan of any catalogued checkpoint can
#: be applied.
MAX_POINTS = 1_000_000
#: Redis GEO can index latitudes only up to this (Web Mercator's limit).
GEO_INDEX_MAX_LAT = 85.05112878


class HuntStatus(enum.StrEnum):
    DRAFT = "draft"
    PUBLISHED = "published"
    CANCELLED = "cancelled"


class TagStatus(enum.StrEnum):
    FOUND = "found"
    UNKNOWN = "unknown"
    INACTIVE = "inactive"
    #: The requested hunt does not exist.
    UNKNOWN_HUNT = "unknown_hunt"


@dataclass(frozen=True, slots=True)
class Grid:
    """Tile (x, y) is the square of side tile_size_m, x tiles east and y tiles
    north of origin."""

    origin_lat: float
    origin_lon: float
    tile_size_m: float
    columns: int
    rows: int

    def tile_of(self, lat: float, lon: float) -> tuple[int, int]:
        """The (x, y) of the tile holding a point, on or off the grid. North is
        measured along the meridian, east along the origin's parallel (the
        longitude difference taken in [-180, 180)), as the proto says."""
        north_m = EARTH_RADIUS_M * math.radians(lat - self.origin_lat)
        dlon = (lon - self.origin_lon + 180.0) % 360.0 - 180.0
        east_m = EARTH_RADIUS_M * math.cos(math.radians(self.origin_lat)) * math.radians(dlon)
        return math.floor(east_m / self.tile_size_m), math.floor(north_m / self.tile_size_m)

    def covers(self, lat: float, lon: float) -> bool:
        """Whether the point lies on one of the grid's tiles (every checkpoint
        of a hunt must)."""
        x, y = self.tile_of(lat, lon)
        return 0 <= x < self.columns and 0 <= y < self.rows


@dataclass(frozen=True, slots=True)
class Hunt:
    hunt_id: str
    name: str
    starts_at: datetime
    ends_at: datetime
    status: HuntStatus
    grid: Grid
    created_at: datetime
    updated_at: datetime
    #: Catalog version (a global sequence): a cached copy never replaces a newer one.
    version: int


@dataclass(frozen=True, slots=True)
class NewHunt:
    """What CreateHunt stores."""

    hunt_id: str
    name: str
    starts_at: datetime
    ends_at: datetime
    status: HuntStatus
    grid: Grid


@dataclass(frozen=True, slots=True)
class HuntChanges:
    """What UpdateHunt changes; None leaves a field as it is."""

    name: str | None = None
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    status: HuntStatus | None = None
    grid: Grid | None = None


@dataclass(frozen=True, slots=True)
class Checkpoint:
    checkpoint_id: str
    hunt_id: str
    tag_id: str
    name: str
    lat: float
    lon: float
    radius_m: float
    points: int
    first_finder_bonus: int
    active: bool
    #: Catalog version of the last change (a global sequence).
    version: int


@dataclass(frozen=True, slots=True)
class CheckpointInput:
    """What UpsertCheckpoint stores."""

    checkpoint_id: str
    hunt_id: str
    tag_id: str
    name: str
    lat: float
    lon: float
    radius_m: float
    points: int
    first_finder_bonus: int


@dataclass(frozen=True, slots=True)
class CheckpointSet:
    """The active checkpoints of a hunt as of one catalog version."""

    version: int
    checkpoints: tuple[Checkpoint, ...]


@dataclass(frozen=True, slots=True)
class CheckInResult:
    tag_status: TagStatus
    checkpoint: Checkpoint | None
    hunt: Hunt | None
    distance_m: float
    allowed_m: float
    in_range: bool


@dataclass(frozen=True, slots=True)
class Sighting:
    """A player seen somewhere, at `seen_ms` (Unix milliseconds)."""

    hunt_id: str
    player_id: str
    lat: float
    lon: float
    accuracy_m: float
    seen_ms: int


@dataclass(frozen=True, slots=True)
class NearbyCheckpoint:
    checkpoint: Checkpoint
    distance_m: float


@dataclass(frozen=True, slots=True)
class NearbyPlayer:
    player_id: str
    lat: float
    lon: float
    distance_m: float


@dataclass(frozen=True, slots=True)
class Tile:
    version: int
    content_type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class TileRead:
    """A tile as the view shows it (None: not in the view) and when the view
    was last refreshed."""

    tile: Tile | None
    refreshed_at: datetime


@dataclass(frozen=True, slots=True)
class TileRefresh:
    refreshed: bool
    refreshed_at: datetime


def allowed_m(radius_m: float, accuracy_m: float) -> float:
    """How far a scan may be: the radius plus the GPS accuracy, at most 50 m of it."""
    return radius_m + min(max(accuracy_m, 0.0), MAX_ACCURACY_ALLOWANCE_M)


def geo_indexable(lat: float) -> bool:
    """Whether Redis GEO can hold a point at this latitude."""
    return -GEO_INDEX_MAX_LAT <= lat <= GEO_INDEX_MAX_LAT


def playable(
    status: HuntStatus | None, starts_at: datetime | None, ends_at: datetime | None, at: datetime
) -> bool:
    """The hunt-active window: a hunt can be played at `at` when it is
    PUBLISHED and starts_at <= at < ends_at."""
    return (
        status is HuntStatus.PUBLISHED
        and starts_at is not None
        and ends_at is not None
        and starts_at <= at < ends_at
    )


@dataclass(frozen=True, slots=True)
class CheckInAnswer:
    """What CheckIn tells a caller about a scanned tag (services.geo.client
    builds it from the wire). Checkpoint and hunt fields are empty unless the
    tag is FOUND or INACTIVE."""

    tag_status: TagStatus
    checkpoint_id: str
    checkpoint_name: str
    points: int
    first_finder_bonus: int
    hunt_status: HuntStatus | None
    hunt_starts_at: datetime | None
    hunt_ends_at: datetime | None
    distance_m: float
    allowed_m: float
    in_range: bool

    def hunt_active_at(self, at: datetime) -> bool:
        return playable(self.hunt_status, self.hunt_starts_at, self.hunt_ends_at, at)


class GeoApi(Protocol):
    """What the scan flow calls: resolve a scanned tag, measure the distance to
    its checkpoint and note where the player is. Implemented over gRPC by
    services.geo.client.GeoClient; UNAVAILABLE when geo cannot answer."""

    async def check_in(
        self,
        *,
        hunt_id: str,
        player_id: str,
        tag_id: str,
        lat: float,
        lon: float,
        accuracy_m: float,
        at: datetime,
        timeout_s: float | None = None,
    ) -> CheckInAnswer: ...


class HuntNotFound(errors.NotFound):
    """No hunt has this id: every service answers it with this reason."""

    reason = "HUNT_NOT_FOUND"

    def __init__(self, hunt_id: str) -> None:
        super().__init__(f"hunt {hunt_id} not found")


class Hunts(Protocol):
    """What other services ask of geo's catalog: whether a hunt exists (True,
    False, or None when geo cannot say now). Implemented over gRPC by
    services.geo.client.HuntDirectory."""

    async def exists(self, hunt_id: str, timeout_s: float | None = None) -> bool | None: ...
