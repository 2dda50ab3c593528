"""Times as services keep and send them: google.protobuf.Timestamp for the
proto <-> domain conversion in each service's server.py and client.py, and
exact integer microseconds / milliseconds since the Unix epoch for Redis
values and digests (integer arithmetic on timedelta, so nothing is rounded)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from google.protobuf.timestamp_pb2 import Timestamp

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_MS = timedelta(milliseconds=1)


def timestamp(value: datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(value)
    return out


def timestamp_ms(ms: int) -> Timestamp:
    """From milliseconds since the epoch."""
    out = Timestamp()
    out.FromMilliseconds(ms)
    return out


def to_us(value: datetime) -> int:
    """Microseconds since the epoch, exactly (an aware datetime)."""
    return (value - EPOCH) // _US


def from_us(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def to_ms(value: datetime) -> int:
    """Milliseconds since the epoch, rounded down (an aware datetime)."""
    return (value - EPOCH) // _MS


def from_ms(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


def now_ms() -> int:
    """The wall clock in milliseconds since the epoch."""
    return time.time_ns() // 1_000_000
