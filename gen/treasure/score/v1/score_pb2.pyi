import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from treasure.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class UnlockResult(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    UNLOCK_RESULT_UNSPECIFIED: _ClassVar[UnlockResult]
    UNLOCK_RESULT_UNLOCKED: _ClassVar[UnlockResult]
    UNLOCK_RESULT_ALREADY_UNLOCKED: _ClassVar[UnlockResult]
UNLOCK_RESULT_UNSPECIFIED: UnlockResult
UNLOCK_RESULT_UNLOCKED: UnlockResult
UNLOCK_RESULT_ALREADY_UNLOCKED: UnlockResult

class UnlockRequest(_message.Message):
    __slots__ = ("scan_id", "hunt_id", "player_id", "checkpoint_id", "points", "first_finder_bonus", "at")
    SCAN_ID_FIELD_NUMBER: _ClassVar[int]
    HUNT_ID_FIELD_NUMBER: _ClassVar[int]
    PLAYER_ID_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    FIRST_FINDER_BONUS_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    scan_id: str
    hunt_id: str
    player_id: str
    checkpoint_id: str
    points: int
    first_finder_bonus: int
    at: _timestamp_pb2.Timestamp
    def __init__(self, scan_id: _Optional[str] = ..., hunt_id: _Optional[str] = ..., player_id: _Optional[str] = ..., checkpoint_id: _Optional[str] = ..., points: _Optional[int] = ..., first_finder_bonus: _Optional[int] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class UnlockResponse(_message.Message):
    __slots__ = ("result", "points_awarded", "first_finder", "total_points", "checkpoints_found", "unlock_scan_id")
    RESULT_FIELD_NUMBER: _ClassVar[int]
    POINTS_AWARDED_FIELD_NUMBER: _ClassVar[int]
    FIRST_FINDER_FIELD_NUMBER: _ClassVar[int]
    TOTAL_POINTS_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINTS_FOUND_FIELD_NUMBER: _ClassVar[int]
    UNLOCK_SCAN_ID_FIELD_NUMBER: _ClassVar[int]
    result: UnlockResult
    points_awarded: int
    first_finder: bool
    total_points: int
    checkpoints_found: int
    unlock_scan_id: str
    def __init__(self, result: _Optional[_Union[UnlockResult, str]] = ..., points_awarded: _Optional[int] = ..., first_finder: _Optional[bool] = ..., total_points: _Optional[int] = ..., checkpoints_found: _Optional[int] = ..., unlock_scan_id: _Optional[str] = ...) -> None: ...

class UnlockStreamRequest(_message.Message):
    __slots__ = ("id", "request", "traceparent", "timeout_ms")
    ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    id: int
    request: UnlockRequest
    traceparent: str
    timeout_ms: int
    def __init__(self, id: _Optional[int] = ..., request: _Optional[_Union[UnlockRequest, _Mapping]] = ..., traceparent: _Optional[str] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class UnlockStreamResponse(_message.Message):
    __slots__ = ("id", "response", "error")
    ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    id: int
    response: UnlockResponse
    error: _common_pb2.CallError
    def __init__(self, id: _Optional[int] = ..., response: _Optional[_Union[UnlockResponse, _Mapping]] = ..., error: _Optional[_Union[_common_pb2.CallError, _Mapping]] = ...) -> None: ...

class GetScoreRequest(_message.Message):
    __slots__ = ("hunt_id", "player_id")
    HUNT_ID_FIELD_NUMBER: _ClassVar[int]
    PLAYER_ID_FIELD_NUMBER: _ClassVar[int]
    hunt_id: str
    player_id: str
    def __init__(self, hunt_id: _Optional[str] = ..., player_id: _Optional[str] = ...) -> None: ...

class GetScoreResponse(_message.Message):
    __slots__ = ("total_points", "checkpoints_found", "reached_at")
    TOTAL_POINTS_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINTS_FOUND_FIELD_NUMBER: _ClassVar[int]
    REACHED_AT_FIELD_NUMBER: _ClassVar[int]
    total_points: int
    checkpoints_found: int
    reached_at: _timestamp_pb2.Timestamp
    def __init__(self, total_points: _Optional[int] = ..., checkpoints_found: _Optional[int] = ..., reached_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetProgressRequest(_message.Message):
    __slots__ = ("hunt_id", "player_id")
    HUNT_ID_FIELD_NUMBER: _ClassVar[int]
    PLAYER_ID_FIELD_NUMBER: _ClassVar[int]
    hunt_id: str
    player_id: str
    def __init__(self, hunt_id: _Optional[str] = ..., player_id: _Optional[str] = ...) -> None: ...

class UnlockedCheckpoint(_message.Message):
    __slots__ = ("checkpoint_id", "points_awarded", "first_finder", "unlocked_at", "scan_id")
    CHECKPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    POINTS_AWARDED_FIELD_NUMBER: _ClassVar[int]
    FIRST_FINDER_FIELD_NUMBER: _ClassVar[int]
    UNLOCKED_AT_FIELD_NUMBER: _ClassVar[int]
    SCAN_ID_FIELD_NUMBER: _ClassVar[int]
    checkpoint_id: str
    points_awarded: int
    first_finder: bool
    unlocked_at: _timestamp_pb2.Timestamp
    scan_id: str
    def __init__(self, checkpoint_id: _Optional[str] = ..., points_awarded: _Optional[int] = ..., first_finder: _Optional[bool] = ..., unlocked_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., scan_id: _Optional[str] = ...) -> None: ...

class GetProgressResponse(_message.Message):
    __slots__ = ("total_points", "checkpoints_found", "checkpoints")
    TOTAL_POINTS_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINTS_FOUND_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINTS_FIELD_NUMBER: _ClassVar[int]
    total_points: int
    checkpoints_found: int
    checkpoints: _containers.RepeatedCompositeFieldContainer[UnlockedCheckpoint]
    def __init__(self, total_points: _Optional[int] = ..., checkpoints_found: _Optional[int] = ..., checkpoints: _Optional[_Iterable[_Union[UnlockedCheckpoint, _Mapping]]] = ...) -> None: ...

class StreamScoresRequest(_message.Message):
    __slots__ = ("hunt_id", "page_size")
    HUNT_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    hunt_id: str
    page_size: int
    def __init__(self, hunt_id: _Optional[str] = ..., page_size: _Optional[int] = ...) -> None: ...

class PlayerTotal(_message.Message):
    __slots__ = ("player_id", "total_points", "reached_at", "version")
    PLAYER_ID_FIELD_NUMBER: _ClassVar[int]
    TOTAL_POINTS_FIELD_NUMBER: _ClassVar[int]
    REACHED_AT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    player_id: str
    total_points: int
    reached_at: _timestamp_pb2.Timestamp
    version: int
    def __init__(self, player_id: _Optional[str] = ..., total_points: _Optional[int] = ..., reached_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., version: _Optional[int] = ...) -> None: ...

class StreamScoresResponse(_message.Message):
    __slots__ = ("totals",)
    TOTALS_FIELD_NUMBER: _ClassVar[int]
    totals: _containers.RepeatedCompositeFieldContainer[PlayerTotal]
    def __init__(self, totals: _Optional[_Iterable[_Union[PlayerTotal, _Mapping]]] = ...) -> None: ...
