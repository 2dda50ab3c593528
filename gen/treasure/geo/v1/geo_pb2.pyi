import datetime

from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from treasure.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HuntStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HUNT_STATUS_UNSPECIFIED: _ClassVar[HuntStatus]
    HUNT_STATUS_DRAFT: _ClassVar[HuntStatus]
    HUNT_STATUS_PUBLISHED: _ClassVar[HuntStatus]
    HUNT_STATUS_CANCELLED: _ClassVar[HuntStatus]

class TagStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TAG_STATUS_UNSPECIFIED: _ClassVar[TagStatus]
    TAG_STATUS_FOUND: _ClassVar[TagStatus]
    TAG_STATUS_UNKNOWN: _ClassVar[TagStatus]
    TAG_STATUS_INACTIVE: _ClassVar[TagStatus]
    TAG_STATUS_UNKNOWN_HUNT: _ClassVar[TagStatus]
HUNT_STATUS_UNSPECIFIED: HuntStatus
HUNT_STATUS_DRAFT: HuntStatus
HUNT_STATUS_PUBLISHED: HuntStatus
HUNT_STATUS_CANCELLED: HuntStatus
TAG_STATUS_UNSPECIFIED: TagStatus
TAG_STATUS_FOUND: TagStatus
TAG_STATUS_UNKNOWN: TagStatus
TAG_STATUS_INACTIVE: TagStatus
TAG_STATUS_UNKNOWN_HUNT: TagStatus

class TileGrid(_message.Message):
    __slots__ = ("origin", "tile_size_m", "columns", "rows")
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    TILE_SIZE_M_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    origin: _common_pb2.GeoPoint
    tile_size_m: float
    columns: int
    rows: int
    def __init__(self, origin: _Optional[_Union[_common_pb2.GeoPoint, _Mapping]] = ..., tile_size_m: _Optional[float] = ..., columns: _Optional[int] = ..., rows: _Optional[int] = ...) -> None: ...

class Hunt(_message.Message):
    __slots__ = ("hunt_id", "name", "starts_at", "ends_at", "status", "grid", "created_at", "updated_at")
    HUNT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STARTS_AT_FIELD_NUMBER: _ClassVar[int]
    ENDS_AT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    GRID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    hunt_id: str
    name: str
    starts_at: _timestamp_pb2.Timestamp
    ends_at: _timestamp_pb2.Timestamp
    status: HuntStatus
    grid: TileGrid
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, hunt_id: _Optional[str] = ..., name: _Optional[str] = ..., starts_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ends_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., status: _Optional[_Union[HuntStatus, str]] = ..., grid: _Optional[_Union[TileGrid, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Checkpoint(_message.Message):
    __slots__ = ("checkpoint_id", "hunt_id", "tag_id", "name", "location", "radius_m", "points", "first_finder_bonus", "active")
    CHECKPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    HUNT_ID_FIELD_NUMBER: _ClassVar[int]
    TAG_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    RADIUS_M_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    FIRST_FINDER_BONUS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    checkpoint_id: str
    hunt_id: str
    tag_id: str
    name: str
    location: _common_pb2.GeoPoint
    radius_m: float
    points: int
    first_finder_bonus: int
    active: bool
    def __init__(self, checkpoint_id: _Optional[str] = ..., hunt_id: _Optional[str] = ..., tag_id: _Optional[str] = ..., name: _Optional[str] = ..., location: _Optional[_Union[_common_pb2.GeoPoint, _Mapping]] = ..., radius_m: _Optional[float] = ..., points: _Optional[int] = ..., first_finder_bonus: _Optional[int] = ..., active: _Optional[bool] = ...) -> None: ...

class CreateHuntRequest(_message.Message):
    __slots__ = ("hunt",)
    HUNT_FIELD_NUMBER: _ClassVar[int]
    hunt: Hunt
    def __init__(self, hunt: _Optional[_Union[Hunt, _Mapping]] = ...) -> None: ...

class CreateHuntResponse(_message.Message):
    __slots__ = ("hunt",)
    HUNT_FIELD_NUMBER: _ClassVar[int]
    hunt: Hunt
    def __init__(self, hunt: _Optional[_Union[Hunt, _Mapping]] = ...) -> None: ...

class UpdateHuntRequest(_message.Message):
    __slots__ = ("hunt", "update_mask")
    HUNT_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    hunt: Hunt
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, hunt: _Optional[_Union[Hunt, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class UpdateHuntResponse(_message.Message):
    __slots__ = ("hunt",)
    HUNT_FIELD_NUMBER: _ClassVar[int]
    hunt: Hunt
    def __init__(self, hunt: _Optional[_Union[Hunt, _Mapping]] = ...) -> None: ...

class GetHuntRequest(_message.Message):
    __slots__ = ("hunt_id",)
    HUNT_ID_FIELD_NUMBER: _ClassVar[int]
    hunt_id: str
    def __init__(self, hunt_id: _Optional[str] = ...) -> None: ...

class GetHuntResponse(_message.Message):
    __slots__ = ("hunt",)
    HUNT_FIELD_NUMBER: _ClassVar[int]
    hunt: Hunt
    def __init__(self, hunt: _Optional[_Union[Hunt, _Mapping]] = ...) -> None: ...

class ListHuntsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListHuntsResponse(_message.Message):
    __slots__ = ("hunts", "next_page_token")
    HUNTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    hunts: _containers.RepeatedCompositeFieldContainer[Hunt]
    next_page_token: str
    def __init__(self, hunts: _Optional[_Iterable[_Union[Hunt, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpsertCheckpointRequest(_message.Message):
    __slots__ = ("checkpoint",)
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    checkpoint: Checkpoint
    def __init__(self, checkpoint: _Optional[_Union[Checkpoint, _Mapping]] = ...) -> None: ...

class UpsertCheckpointResponse(_message.Message):
    __slots__ = ("checkpoint", "created")
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    checkpoint: Checkpoint
    created: bool
    def __init__(self, checkpoint: _Optional[_Union[Checkpoint, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class ListCheckpointsRequest(_message.Message):
    __slots__ = ("hunt_id", "include_inactive", "page_size", "page_token")
    HUNT_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_INACTIVE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    hunt_id: str
    include_inactive: bool
    page_size: int
    page_token: str
    def __init__(self, hunt_id: _Optional[str] = ..., include_inactive: _Optional[bool] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListCheckpointsResponse(_message.Message):
    __slots__ = ("checkpoints", "next_page_token")
    CHECKPOINTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    checkpoints: _containers.RepeatedCompositeFieldContainer[Checkpoint]
    next_page_token: str
    def __init__(self, checkpoints: _Optional[_Iterable[_Union[Checkpoint, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeactivateCheckpointRequest(_message.Message):
    __slots__ = ("hunt_id", "checkpoint_id")
    HUNT_ID_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    hunt_id: str
    checkpoint_id: str
    def __init__(self, hunt_id: _Optional[str] = ..., checkpoint_id: _Optional[str] = ...) -> None: ...

class DeactivateCheckpointResponse(_message.Message):
    __slots__ = ("checkpoint",)
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    checkpoint: Checkpoint
    def __init__(self, checkpoint: _Optional[_Union[Checkpoint, _Mapping]] = ...) -> None: ...

class PutTileRequest(_message.Message):
    __slots__ = ("hunt_id", "x", "y", "data", "version", "content_type")
    HUNT_ID_FIELD_NUMBER: _ClassVar[int]
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    hunt_id: str
    x: int
    y: int
    data: bytes
    version: int
    content_type: str
    def __init__(self, hunt_id: _Optional[str] = ..., x: _Optional[int] = ..., y: _Optional[int] = ..., data: _Optional[bytes] = ..., version: _Optional[int] = ..., content_type: _Optional[str] = ...) -> None: ...

class PutTileResponse(_message.Message):
    __slots__ = ("stored_version",)
    STORED_VERSION_FIELD_NUMBER: _ClassVar[int]
    stored_version: int
    def __init__(self, stored_version: _Optional[int] = ...) -> None: ...

class RefreshTilesRequest(_message.Message):
    __slots__ = ("hunt_id",)
    HUNT_ID_FIELD_NUMBER: _ClassVar[int]
    hunt_id: str
    def __init__(self, hunt_id: _Optional[str] = ...) -> None: ...

class RefreshTilesResponse(_message.Message):
    __slots__ = ("refreshed", "refreshed_at")
    REFRESHED_FIELD_NUMBER: _ClassVar[int]
    REFRESHED_AT_FIELD_NUMBER: _ClassVar[int]
    refreshed: bool
    refreshed_at: _timestamp_pb2.Timestamp
    def __init__(self, refreshed: _Optional[bool] = ..., refreshed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CheckInRequest(_message.Message):
    __slots__ = ("hunt_id", "player_id", "tag_id", "location", "accuracy_m", "at")
    HUNT_ID_FIELD_NUMBER: _ClassVar[int]
    PLAYER_ID_FIELD_NUMBER: _ClassVar[int]
    TAG_ID_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_M_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    hunt_id: str
    player_id: str
    tag_id: str
    location: _common_pb2.GeoPoint
    accuracy_m: float
    at: _timestamp_pb2.Timestamp
    def __init__(self, hunt_id: _Optional[str] = ..., player_id: _Optional[str] = ..., tag_id: _Optional[str] = ..., location: _Optional[_Union[_common_pb2.GeoPoint, _Mapping]] = ..., accuracy_m: _Optional[float] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CheckInResponse(_message.Message):
    __slots__ = ("tag_status", "checkpoint", "hunt", "distance_m", "allowed_m", "in_range")
    TAG_STATUS_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    HUNT_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_M_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_M_FIELD_NUMBER: _ClassVar[int]
    IN_RANGE_FIELD_NUMBER: _ClassVar[int]
    tag_status: TagStatus
    checkpoint: Checkpoint
    hunt: Hunt
    distance_m: float
    allowed_m: float
    in_range: bool
    def __init__(self, tag_status: _Optional[_Union[TagStatus, str]] = ..., checkpoint: _Optional[_Union[Checkpoint, _Mapping]] = ..., hunt: _Optional[_Union[Hunt, _Mapping]] = ..., distance_m: _Optional[float] = ..., allowed_m: _Optional[float] = ..., in_range: _Optional[bool] = ...) -> None: ...

class CheckInStreamRequest(_message.Message):
    __slots__ = ("id", "request", "traceparent", "timeout_ms")
    ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    id: int
    request: CheckInRequest
    traceparent: str
    timeout_ms: int
    def __init__(self, id: _Optional[int] = ..., request: _Optional[_Union[CheckInRequest, _Mapping]] = ..., traceparent: _Optional[str] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class CheckInStreamResponse(_message.Message):
    __slots__ = ("id", "response", "error")
    ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    id: int
    response: CheckInResponse
    error: _common_pb2.CallError
    def __init__(self, id: _Optional[int] = ..., response: _Optional[_Union[CheckInResponse, _Mapping]] = ..., error: _Optional[_Union[_common_pb2.CallError, _Mapping]] = ...) -> None: ...

class PlayerLocation(_message.Message):
    __slots__ = ("hunt_id", "player_id", "location", "accuracy_m", "seen_at")
    HUNT_ID_FIELD_NUMBER: _ClassVar[int]
    PLAYER_ID_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_M_FIELD_NUMBER: _ClassVar[int]
    SEEN_AT_FIELD_NUMBER: _ClassVar[int]
    hunt_id: str
    player_id: str
    location: _common_pb2.GeoPoint
    accuracy_m: float
    seen_at: _timestamp_pb2.Timestamp
    def __init__(self, hunt_id: _Optional[str] = ..., player_id: _Optional[str] = ..., location: _Optional[_Union[_common_pb2.GeoPoint, _Mapping]] = ..., accuracy_m: _Optional[float] = ..., seen_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class UpdateLocationRequest(_message.Message):
    __slots__ = ("hunt_id", "player_id", "location", "accuracy_m", "at")
    HUNT_ID_FIELD_NUMBER: _ClassVar[int]
    PLAYER_ID_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_M_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    hunt_id: str
    player_id: str
    location: _common_pb2.GeoPoint
    accuracy_m: float
    at: _timestamp_pb2.Timestamp
    def __init__(self, hunt_id: _Optional[str] = ..., player_id: _Optional[str] = ..., location: _Optional[_Union[_common_pb2.GeoPoint, _Mapping]] = ..., accuracy_m: _Optional[float] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class UpdateLocationResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetPlayerLocationRequest(_message.Message):
    __slots__ = ("player_id",)
    PLAYER_ID_FIELD_NUMBER: _ClassVar[int]
    player_id: str
    def __init__(self, player_id: _Optional[str] = ...) -> None: ...

class GetPlayerLocationResponse(_message.Message):
    __slots__ = ("location",)
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    location: PlayerLocation
    def __init__(self, location: _Optional[_Union[PlayerLocation, _Mapping]] = ...) -> None: ...

class NearbyCheckpointsRequest(_message.Message):
    __slots__ = ("hunt_id", "center", "radius_m", "limit")
    HUNT_ID_FIELD_NUMBER: _ClassVar[int]
    CENTER_FIELD_NUMBER: _ClassVar[int]
    RADIUS_M_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    hunt_id: str
    center: _common_pb2.GeoPoint
    radius_m: float
    limit: int
    def __init__(self, hunt_id: _Optional[str] = ..., center: _Optional[_Union[_common_pb2.GeoPoint, _Mapping]] = ..., radius_m: _Optional[float] = ..., limit: _Optional[int] = ...) -> None: ...

class NearbyCheckpoint(_message.Message):
    __slots__ = ("checkpoint", "distance_m")
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_M_FIELD_NUMBER: _ClassVar[int]
    checkpoint: Checkpoint
    distance_m: float
    def __init__(self, checkpoint: _Optional[_Union[Checkpoint, _Mapping]] = ..., distance_m: _Optional[float] = ...) -> None: ...

class NearbyCheckpointsResponse(_message.Message):
    __slots__ = ("checkpoints",)
    CHECKPOINTS_FIELD_NUMBER: _ClassVar[int]
    checkpoints: _containers.RepeatedCompositeFieldContainer[NearbyCheckpoint]
    def __init__(self, checkpoints: _Optional[_Iterable[_Union[NearbyCheckpoint, _Mapping]]] = ...) -> None: ...

class NearbyPlayersRequest(_message.Message):
    __slots__ = ("hunt_id", "center", "radius_m", "limit")
    HUNT_ID_FIELD_NUMBER: _ClassVar[int]
    CENTER_FIELD_NUMBER: _ClassVar[int]
    RADIUS_M_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    hunt_id: str
    center: _common_pb2.GeoPoint
    radius_m: float
    limit: int
    def __init__(self, hunt_id: _Optional[str] = ..., center: _Optional[_Union[_common_pb2.GeoPoint, _Mapping]] = ..., radius_m: _Optional[float] = ..., limit: _Optional[int] = ...) -> None: ...

class NearbyPlayer(_message.Message):
    __slots__ = ("player_id", "location", "distance_m")
    PLAYER_ID_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_M_FIELD_NUMBER: _ClassVar[int]
    player_id: str
    location: _common_pb2.GeoPoint
    distance_m: float
    def __init__(self, player_id: _Optional[str] = ..., location: _Optional[_Union[_common_pb2.GeoPoint, _Mapping]] = ..., distance_m: _Optional[float] = ...) -> None: ...

class NearbyPlayersResponse(_message.Message):
    __slots__ = ("players",)
    PLAYERS_FIELD_NUMBER: _ClassVar[int]
    players: _containers.RepeatedCompositeFieldContainer[NearbyPlayer]
    def __init__(self, players: _Optional[_Iterable[_Union[NearbyPlayer, _Mapping]]] = ...) -> None: ...

class GetTileRequest(_message.Message):
    __slots__ = ("hunt_id", "x", "y", "known_version")
    HUNT_ID_FIELD_NUMBER: _ClassVar[int]
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    KNOWN_VERSION_FIELD_NUMBER: _ClassVar[int]
    hunt_id: str
    x: int
    y: int
    known_version: int
    def __init__(self, hunt_id: _Optional[str] = ..., x: _Optional[int] = ..., y: _Optional[int] = ..., known_version: _Optional[int] = ...) -> None: ...

class TileRef(_message.Message):
    __slots__ = ("x", "y", "known_version")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    KNOWN_VERSION_FIELD_NUMBER: _ClassVar[int]
    x: int
    y: int
    known_version: int
    def __init__(self, x: _Optional[int] = ..., y: _Optional[int] = ..., known_version: _Optional[int] = ...) -> None: ...

class GetTilesRequest(_message.Message):
    __slots__ = ("hunt_id", "cells")
    HUNT_ID_FIELD_NUMBER: _ClassVar[int]
    CELLS_FIELD_NUMBER: _ClassVar[int]
    hunt_id: str
    cells: _containers.RepeatedCompositeFieldContainer[TileRef]
    def __init__(self, hunt_id: _Optional[str] = ..., cells: _Optional[_Iterable[_Union[TileRef, _Mapping]]] = ...) -> None: ...

class TileAnswer(_message.Message):
    __slots__ = ("x", "y", "found", "not_modified", "version", "data", "content_type")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    NOT_MODIFIED_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    x: int
    y: int
    found: bool
    not_modified: bool
    version: int
    data: bytes
    content_type: str
    def __init__(self, x: _Optional[int] = ..., y: _Optional[int] = ..., found: _Optional[bool] = ..., not_modified: _Optional[bool] = ..., version: _Optional[int] = ..., data: _Optional[bytes] = ..., content_type: _Optional[str] = ...) -> None: ...

class GetTilesResponse(_message.Message):
    __slots__ = ("tiles", "view_refreshed_at")
    TILES_FIELD_NUMBER: _ClassVar[int]
    VIEW_REFRESHED_AT_FIELD_NUMBER: _ClassVar[int]
    tiles: _containers.RepeatedCompositeFieldContainer[TileAnswer]
    view_refreshed_at: _timestamp_pb2.Timestamp
    def __init__(self, tiles: _Optional[_Iterable[_Union[TileAnswer, _Mapping]]] = ..., view_refreshed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetTileResponse(_message.Message):
    __slots__ = ("not_modified", "version", "data", "content_type", "view_refreshed_at")
    NOT_MODIFIED_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    VIEW_REFRESHED_AT_FIELD_NUMBER: _ClassVar[int]
    not_modified: bool
    version: int
    data: bytes
    content_type: str
    view_refreshed_at: _timestamp_pb2.Timestamp
    def __init__(self, not_modified: _Optional[bool] = ..., version: _Optional[int] = ..., data: _Optional[bytes] = ..., content_type: _Optional[str] = ..., view_refreshed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
