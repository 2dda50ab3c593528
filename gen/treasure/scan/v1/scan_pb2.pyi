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

class ScanOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SCAN_OUTCOME_UNSPECIFIED: _ClassVar[ScanOutcome]
    SCAN_OUTCOME_UNLOCKED: _ClassVar[ScanOutcome]
    SCAN_OUTCOME_ALREADY_UNLOCKED: _ClassVar[ScanOutcome]
    SCAN_OUTCOME_OUT_OF_RANGE: _ClassVar[ScanOutcome]
    SCAN_OUTCOME_UNKNOWN_TAG: _ClassVar[ScanOutcome]
    SCAN_OUTCOME_HUNT_NOT_ACTIVE: _ClassVar[ScanOutcome]
    SCAN_OUTCOME_IMPLAUSIBLE_SPEED: _ClassVar[ScanOutcome]
    SCAN_OUTCOME_UNKNOWN_HUNT: _ClassVar[ScanOutcome]

class ScanStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SCAN_STATUS_UNSPECIFIED: _ClassVar[ScanStatus]
    SCAN_STATUS_RECEIVED: _ClassVar[ScanStatus]
    SCAN_STATUS_APPLIED: _ClassVar[ScanStatus]
SCAN_OUTCOME_UNSPECIFIED: ScanOutcome
SCAN_OUTCOME_UNLOCKED: ScanOutcome
SCAN_OUTCOME_ALREADY_UNLOCKED: ScanOutcome
SCAN_OUTCOME_OUT_OF_RANGE: ScanOutcome
SCAN_OUTCOME_UNKNOWN_TAG: ScanOutcome
SCAN_OUTCOME_HUNT_NOT_ACTIVE: ScanOutcome
SCAN_OUTCOME_IMPLAUSIBLE_SPEED: ScanOutcome
SCAN_OUTCOME_UNKNOWN_HUNT: ScanOutcome
SCAN_STATUS_UNSPECIFIED: ScanStatus
SCAN_STATUS_RECEIVED: ScanStatus
SCAN_STATUS_APPLIED: ScanStatus

class SubmitScanRequest(_message.Message):
    __slots__ = ("player_id", "hunt_id", "tag_id", "location", "accuracy_m", "scanned_at", "client_scan_id")
    PLAYER_ID_FIELD_NUMBER: _ClassVar[int]
    HUNT_ID_FIELD_NUMBER: _ClassVar[int]
    TAG_ID_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_M_FIELD_NUMBER: _ClassVar[int]
    SCANNED_AT_FIELD_NUMBER: _ClassVar[int]
    CLIENT_SCAN_ID_FIELD_NUMBER: _ClassVar[int]
    player_id: str
    hunt_id: str
    tag_id: str
    location: _common_pb2.GeoPoint
    accuracy_m: float
    scanned_at: _timestamp_pb2.Timestamp
    client_scan_id: str
    def __init__(self, player_id: _Optional[str] = ..., hunt_id: _Optional[str] = ..., tag_id: _Optional[str] = ..., location: _Optional[_Union[_common_pb2.GeoPoint, _Mapping]] = ..., accuracy_m: _Optional[float] = ..., scanned_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., client_scan_id: _Optional[str] = ...) -> None: ...

class SubmitScanResponse(_message.Message):
    __slots__ = ("scan_id", "outcome", "points_awarded", "total_points", "checkpoint_id", "checkpoint_name", "first_finder", "status", "hunt_id")
    SCAN_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    POINTS_AWARDED_FIELD_NUMBER: _ClassVar[int]
    TOTAL_POINTS_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_NAME_FIELD_NUMBER: _ClassVar[int]
    FIRST_FINDER_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    HUNT_ID_FIELD_NUMBER: _ClassVar[int]
    scan_id: str
    outcome: ScanOutcome
    points_awarded: int
    total_points: int
    checkpoint_id: str
    checkpoint_name: str
    first_finder: bool
    status: ScanStatus
    hunt_id: str
    def __init__(self, scan_id: _Optional[str] = ..., outcome: _Optional[_Union[ScanOutcome, str]] = ..., points_awarded: _Optional[int] = ..., total_points: _Optional[int] = ..., checkpoint_id: _Optional[str] = ..., checkpoint_name: _Optional[str] = ..., first_finder: _Optional[bool] = ..., status: _Optional[_Union[ScanStatus, str]] = ..., hunt_id: _Optional[str] = ...) -> None: ...

class Scan(_message.Message):
    __slots__ = ("scan_id", "player_id", "hunt_id", "tag_id", "location", "accuracy_m", "scanned_at", "client_scan_id", "received_at", "status", "outcome", "points_awarded", "total_points", "checkpoint_id", "checkpoint_name", "first_finder", "applied_at")
    SCAN_ID_FIELD_NUMBER: _ClassVar[int]
    PLAYER_ID_FIELD_NUMBER: _ClassVar[int]
    HUNT_ID_FIELD_NUMBER: _ClassVar[int]
    TAG_ID_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_M_FIELD_NUMBER: _ClassVar[int]
    SCANNED_AT_FIELD_NUMBER: _ClassVar[int]
    CLIENT_SCAN_ID_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_AT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    POINTS_AWARDED_FIELD_NUMBER: _ClassVar[int]
    TOTAL_POINTS_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_NAME_FIELD_NUMBER: _ClassVar[int]
    FIRST_FINDER_FIELD_NUMBER: _ClassVar[int]
    APPLIED_AT_FIELD_NUMBER: _ClassVar[int]
    scan_id: str
    player_id: str
    hunt_id: str
    tag_id: str
    location: _common_pb2.GeoPoint
    accuracy_m: float
    scanned_at: _timestamp_pb2.Timestamp
    client_scan_id: str
    received_at: _timestamp_pb2.Timestamp
    status: ScanStatus
    outcome: ScanOutcome
    points_awarded: int
    total_points: int
    checkpoint_id: str
    checkpoint_name: str
    first_finder: bool
    applied_at: _timestamp_pb2.Timestamp
    def __init__(self, scan_id: _Optional[str] = ..., player_id: _Optional[str] = ..., hunt_id: _Optional[str] = ..., tag_id: _Optional[str] = ..., location: _Optional[_Union[_common_pb2.GeoPoint, _Mapping]] = ..., accuracy_m: _Optional[float] = ..., scanned_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., client_scan_id: _Optional[str] = ..., received_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., status: _Optional[_Union[ScanStatus, str]] = ..., outcome: _Optional[_Union[ScanOutcome, str]] = ..., points_awarded: _Optional[int] = ..., total_points: _Optional[int] = ..., checkpoint_id: _Optional[str] = ..., checkpoint_name: _Optional[str] = ..., first_finder: _Optional[bool] = ..., applied_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetScanRequest(_message.Message):
    __slots__ = ("scan_id",)
    SCAN_ID_FIELD_NUMBER: _ClassVar[int]
    scan_id: str
    def __init__(self, scan_id: _Optional[str] = ...) -> None: ...

class GetScanResponse(_message.Message):
    __slots__ = ("scan",)
    SCAN_FIELD_NUMBER: _ClassVar[int]
    scan: Scan
    def __init__(self, scan: _Optional[_Union[Scan, _Mapping]] = ...) -> None: ...

class ListPlayerScansRequest(_message.Message):
    __slots__ = ("player_id", "hunt_id", "page_size", "page_token")
    PLAYER_ID_FIELD_NUMBER: _ClassVar[int]
    HUNT_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    player_id: str
    hunt_id: str
    page_size: int
    page_token: str
    def __init__(self, player_id: _Optional[str] = ..., hunt_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListPlayerScansResponse(_message.Message):
    __slots__ = ("scans", "next_page_token")
    SCANS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    scans: _containers.RepeatedCompositeFieldContainer[Scan]
    next_page_token: str
    def __init__(self, scans: _Optional[_Iterable[_Union[Scan, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
