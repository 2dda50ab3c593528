import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ScoreUpdate(_message.Message):
    __slots__ = ("hunt_id", "player_id", "total_points", "reached_at", "version")
    HUNT_ID_FIELD_NUMBER: _ClassVar[int]
    PLAYER_ID_FIELD_NUMBER: _ClassVar[int]
    TOTAL_POINTS_FIELD_NUMBER: _ClassVar[int]
    REACHED_AT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    hunt_id: str
    player_id: str
    total_points: int
    reached_at: _timestamp_pb2.Timestamp
    version: int
    def __init__(self, hunt_id: _Optional[str] = ..., player_id: _Optional[str] = ..., total_points: _Optional[int] = ..., reached_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., version: _Optional[int] = ...) -> None: ...

class SubmitScoresRequest(_message.Message):
    __slots__ = ("updates",)
    UPDATES_FIELD_NUMBER: _ClassVar[int]
    updates: _containers.RepeatedCompositeFieldContainer[ScoreUpdate]
    def __init__(self, updates: _Optional[_Iterable[_Union[ScoreUpdate, _Mapping]]] = ...) -> None: ...

class SubmitScoresResponse(_message.Message):
    __slots__ = ("applied", "stale")
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    applied: int
    stale: int
    def __init__(self, applied: _Optional[int] = ..., stale: _Optional[int] = ...) -> None: ...

class LeaderboardEntry(_message.Message):
    __slots__ = ("rank", "player_id", "total_points", "reached_at")
    RANK_FIELD_NUMBER: _ClassVar[int]
    PLAYER_ID_FIELD_NUMBER: _ClassVar[int]
    TOTAL_POINTS_FIELD_NUMBER: _ClassVar[int]
    REACHED_AT_FIELD_NUMBER: _ClassVar[int]
    rank: int
    player_id: str
    total_points: int
    reached_at: _timestamp_pb2.Timestamp
    def __init__(self, rank: _Optional[int] = ..., player_id: _Optional[str] = ..., total_points: _Optional[int] = ..., reached_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetTopRequest(_message.Message):
    __slots__ = ("hunt_id", "limit", "page_token")
    HUNT_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    hunt_id: str
    limit: int
    page_token: str
    def __init__(self, hunt_id: _Optional[str] = ..., limit: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class GetTopResponse(_message.Message):
    __slots__ = ("entries", "next_page_token", "player_count")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PLAYER_COUNT_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[LeaderboardEntry]
    next_page_token: str
    player_count: int
    def __init__(self, entries: _Optional[_Iterable[_Union[LeaderboardEntry, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., player_count: _Optional[int] = ...) -> None: ...

class GetRankRequest(_message.Message):
    __slots__ = ("hunt_id", "player_id")
    HUNT_ID_FIELD_NUMBER: _ClassVar[int]
    PLAYER_ID_FIELD_NUMBER: _ClassVar[int]
    hunt_id: str
    player_id: str
    def __init__(self, hunt_id: _Optional[str] = ..., player_id: _Optional[str] = ...) -> None: ...

class GetRankResponse(_message.Message):
    __slots__ = ("rank", "total_points", "player_count", "reached_at")
    RANK_FIELD_NUMBER: _ClassVar[int]
    TOTAL_POINTS_FIELD_NUMBER: _ClassVar[int]
    PLAYER_COUNT_FIELD_NUMBER: _ClassVar[int]
    REACHED_AT_FIELD_NUMBER: _ClassVar[int]
    rank: int
    total_points: int
    player_count: int
    reached_at: _timestamp_pb2.Timestamp
    def __init__(self, rank: _Optional[int] = ..., total_points: _Optional[int] = ..., player_count: _Optional[int] = ..., reached_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetAroundRequest(_message.Message):
    __slots__ = ("hunt_id", "player_id", "n")
    HUNT_ID_FIELD_NUMBER: _ClassVar[int]
    PLAYER_ID_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    hunt_id: str
    player_id: str
    n: int
    def __init__(self, hunt_id: _Optional[str] = ..., player_id: _Optional[str] = ..., n: _Optional[int] = ...) -> None: ...

class GetAroundResponse(_message.Message):
    __slots__ = ("entries", "player_count")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    PLAYER_COUNT_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[LeaderboardEntry]
    player_count: int
    def __init__(self, entries: _Optional[_Iterable[_Union[LeaderboardEntry, _Mapping]]] = ..., player_count: _Optional[int] = ...) -> None: ...

class WatchTopRequest(_message.Message):
    __slots__ = ("hunt_id", "limit")
    HUNT_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    hunt_id: str
    limit: int
    def __init__(self, hunt_id: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class WatchTopResponse(_message.Message):
    __slots__ = ("entries", "player_count", "as_of")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    PLAYER_COUNT_FIELD_NUMBER: _ClassVar[int]
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[LeaderboardEntry]
    player_count: int
    as_of: _timestamp_pb2.Timestamp
    def __init__(self, entries: _Optional[_Iterable[_Union[LeaderboardEntry, _Mapping]]] = ..., player_count: _Optional[int] = ..., as_of: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RebuildBoardRequest(_message.Message):
    __slots__ = ("hunt_id",)
    HUNT_ID_FIELD_NUMBER: _ClassVar[int]
    hunt_id: str
    def __init__(self, hunt_id: _Optional[str] = ...) -> None: ...

class RebuildBoardResponse(_message.Message):
    __slots__ = ("player_count", "took")
    PLAYER_COUNT_FIELD_NUMBER: _ClassVar[int]
    TOOK_FIELD_NUMBER: _ClassVar[int]
    player_count: int
    took: _duration_pb2.Duration
    def __init__(self, player_count: _Optional[int] = ..., took: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...
