"""Input checks shared by every service: ids, coordinates, numbers, times.

Each check returns the clean value or raises `InvalidArgument` naming the
field. Ids are checked here before they reach a Redis key, so no id can break
a key schema or its hash tags.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import Protocol

from google.protobuf.timestamp_pb2 import Timestamp

from libs.errors import InvalidArgument

ID_RULE = "[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
_ID = re.compile(ID_RULE)


def is_id(value: str) -> bool:
    return _ID.fullmatch(value) is not None


def key_id(kind: str, value: str) -> str:
    """An id on its way into a Redis key (each service's keys.py). Servers
    validate ids first, so one that breaks the rule here is a bug: ValueError,
    never a key that escapes its hash tag or runs into the next part."""
    if not is_id(value):
        raise ValueError(f"invalid {kind} for a Redis key: {value!r}")
    return value


def require_id(field: str, value: str) -> str:
    if not value:
        raise InvalidArgument(field, "is required")
    if _ID.fullmatch(value) is None:
        raise InvalidArgument(field, f"must match {ID_RULE}")
    return value


def optional_id(field: str, value: str) -> str:
    return require_id(field, value) if value else ""


def require_number(
    field: str, value: float, *, low: float | None = None, high: float | None = None
) -> float:
    if not math.isfinite(value):
        raise InvalidArgument(field, "must be a finite number")
    if low is not None and value < low:
        raise InvalidArgument(field, f"must be >= {low:g}")
    if high is not None and value > high:
        raise InvalidArgument(field, f"must be <= {high:g}")
    return value


def require_int(field: str, value: int, *, low: int | None = None, high: int | None = None) -> int:
    if low is not None and value < low:
        raise InvalidArgument(field, f"must be >= {low}")
    if high is not None and value > high:
        raise InvalidArgument(field, f"must be <= {high}")
    return value


def page_size(field: str, value: int, *, default: int, maximum: int) -> int:
    """0 means the default; otherwise 1..maximum."""
    if value == 0:
        return default
    return require_int(field, value, low=1, high=maximum)


class _Point(Protocol):
    """treasure.common.v1.GeoPoint, as validation reads it."""

    lat: float
    lon: float


def require_point(field: str, message: _Point, present: bool) -> tuple[float, float]:
    """A treasure.common.v1.GeoPoint: required, lat in [-90, 90], lon in [-180, 180]."""
    if not present:
        raise InvalidArgument(field, "is required")
    lat = require_number(f"{field}.lat", message.lat, low=-90.0, high=90.0)
    lon = require_number(f"{field}.lon", message.lon, low=-180.0, high=180.0)
    return lat, lon


def require_time(
    field: str,
    ts: Timestamp,
    present: bool,
    *,
    now: datetime | None = None,
    max_ahead: timedelta | None = None,
    max_age: timedelta | None = None,
) -> datetime:
    """A required Timestamp, optionally bounded relative to `now`."""
    if not present:
        raise InvalidArgument(field, "is required")
    return bounded_time(field, ts, now=now, max_ahead=max_ahead, max_age=max_age)


def bounded_time(
    field: str,
    ts: Timestamp,
    *,
    now: datetime | None = None,
    max_ahead: timedelta | None = None,
    max_age: timedelta | None = None,
) -> datetime:
    if not 0 <= ts.nanos < 1_000_000_000:
        raise InvalidArgument(field, "nanos out of range")
    # Year 2000 .. 9999 keeps every value inside datetime and Postgres ranges.
    if not 946_684_800 <= ts.seconds <= 253_402_300_799:
        raise InvalidArgument(field, "must be between 2000-01-01 and 9999-12-31")
    value = ts.ToDatetime(tzinfo=UTC)
    if now is not None and max_ahead is not None and value > now + max_ahead:
        raise InvalidArgument(field, f"is more than {max_ahead.total_seconds():g}s in the future")
    if now is not None and max_age is not None and value < now - max_age:
        raise InvalidArgument(field, f"is older than {max_age.total_seconds():g}s")
    return value


def require_text(field: str, value: str, *, max_len: int, required: bool = True) -> str:
    if required and not value.strip():
        raise InvalidArgument(field, "is required")
    if len(value) > max_len:
        raise InvalidArgument(field, f"must be at most {max_len} characters")
    if any(ord(c) < 32 for c in value):
        raise InvalidArgument(field, "must not contain control characters")
    return value
