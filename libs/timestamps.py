"""google.protobuf.Timestamp from the times services keep (plumbing for the
proto <-> domain conversion in each service's server.py and client.py)."""

from __future__ import annotations

from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp


def timestamp(value: datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(value)
    return out


def timestamp_ms(ms: int) -> Timestamp:
    """From milliseconds since the epoch."""
    out = Timestamp()
    out.FromMilliseconds(ms)
    return out
