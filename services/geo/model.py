"""The geo service's domain values and geometry, free of any transport or storage.

`store.py` and `cache.py` return these small frozen dataclasses; `server.py`
maps them to and from the protos. Distances are great-circle distances
(haversine, `libs.geometry`) on a sphere of radius 6371008.8 m.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

#: A scan may be this much further than the radius when the GPS says it is imprecise.
MAX_ACCURACY_ALLOWANCE_M = 50.0
#: Players seen within this many seconds are "live" (NearbyPlayers).
LIVE_WINDOW_S = 60
#: The last location of a player is kept this long after the sighting.
LOCATION_TTL_S = 30
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


@dataclass(frozen=True, slots=True)
class Grid:
    """Tile (x, y) is the square of side tile_size_m, x tiles east and y tiles
    north of origin."""

    origin_lat: float
    origin_lon: float
    tile_size_m: float
    columns: int
    rows: int


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
