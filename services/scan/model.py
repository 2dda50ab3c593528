"""The scan service's domain values: what a scan is, its outcome, its answer."""

from __future__ import annotations

import enum
import hashlib
import itertools
import os
import time
from dataclasses import asdict, dataclass
from datetime import datetime

from libs.timestamps import to_us


class Outcome(enum.StrEnum):
    UNLOCKED = "unlocked"
    ALREADY_UNLOCKED = "already_unlocked"
    OUT_OF_RANGE = "out_of_range"
    UNKNOWN_TAG = "unknown_tag"
    HUNT_NOT_ACTIVE = "hunt_not_active"
    IMPLAUSIBLE_SPEED = "implausible_speed"
    UNKNOWN_HUNT = "unknown_hunt"


class Status(enum.StrEnum):
    RECEIVED = "received"
    APPLIED = "applied"


#: Outcomes whose position counts as where the player really was (the speed
#: check's "previous scan"): a rejected teleport must not move the player.
PLAUSIBLE = frozenset({Outcome.UNLOCKED, Outcome.ALREADY_UNLOCKED, Outcome.OUT_OF_RANGE})


_sequence = itertools.count()


def new_scan_id() -> str:
    """22 hex digits: the time in ms, a per-process sequence (so ids of one
    process sort by arrival even within a millisecond), and 24 random bits
    (so processes never collide in practice)."""
    return f"{time.time_ns() // 1_000_000:012x}{next(_sequence) % 0x10000:04x}{os.urandom(3).hex()}"


@dataclass(frozen=True)
class ScanInput:
    """A scan as submitted. `lat`, `lon` and `accuracy_m` are always set on a
    submitted scan; they are None only on a scan read back from the log after
    its location was purged (`ScanRecord.location_purged_at`)."""

    player_id: str
    hunt_id: str
    tag_id: str
    lat: float | None
    lon: float | None
    accuracy_m: float | None
    scanned_at: datetime
    client_scan_id: str

    def position(self) -> Position:
        """Where and when the scan was made. Only a scan that still has its
        location has one: the flow never checks in nor speed-checks a purged
        scan (it is applied as HUNT_NOT_ACTIVE first)."""
        if self.lat is None or self.lon is None or self.accuracy_m is None:
            raise ValueError(f"scan {self.client_scan_id} of {self.player_id} has no location")
        return Position(self.lat, self.lon, self.accuracy_m, self.scanned_at)

    @property
    def key(self) -> tuple[str, str, str]:
        """The idempotency key: one player's scan ids are scoped to a hunt."""
        return (self.player_id, self.hunt_id, self.client_scan_id)

    def same_request(self, other: ScanInput) -> bool:
        """Whether `other` (with the same key) asks for the same scan: same
        tag, place, accuracy and time. A purged location is not compared (it
        is gone): a replay that comes after the location's retention is
        matched on its hunt, tag and time."""
        if (self.hunt_id, self.tag_id, self.scanned_at) != (
            other.hunt_id,
            other.tag_id,
            other.scanned_at,
        ):
            return False
        if self.lat is None or other.lat is None:
            return True
        return (self.lat, self.lon, self.accuracy_m) == (other.lat, other.lon, other.accuracy_m)

    def fingerprint(self) -> str:
        """A short digest of what the scan asks (all but its key), stored with
        its answer in Redis so that a repeat can be told from a reused key
        without a Postgres read. Equal requests (`same_request`, location
        kept) have equal fingerprints."""
        at_us = to_us(self.scanned_at)
        raw = f"{self.hunt_id}|{self.tag_id}|{_num(self.lat)}|{_num(self.lon)}|{_num(self.accuracy_m)}|{at_us}"
        return hashlib.blake2b(raw.encode(), digest_size=8).hexdigest()


def _num(value: float | None) -> str:
    # + 0.0 turns -0.0 into 0.0: they compare equal, so they must hash equal.
    return "" if value is None else repr(value + 0.0)


@dataclass(frozen=True)
class Position:
    lat: float
    lon: float
    accuracy_m: float
    at: datetime


@dataclass(frozen=True)
class Answer:
    """What SubmitScan answers; the same for every copy of one scan."""

    scan_id: str
    status: Status
    outcome: Outcome | None = None
    points_awarded: int = 0
    total_points: int = 0
    checkpoint_id: str = ""
    checkpoint_name: str = ""
    first_finder: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Answer:
        return cls(
            scan_id=data["scan_id"],
            status=Status(data["status"]),
            outcome=Outcome(data["outcome"]) if data.get("outcome") else None,
            points_awarded=int(data.get("points_awarded", 0)),
            total_points=int(data.get("total_points", 0)),
            checkpoint_id=data.get("checkpoint_id", ""),
            checkpoint_name=data.get("checkpoint_name", ""),
            first_finder=bool(data.get("first_finder", False)),
        )


@dataclass(frozen=True)
class ScanRecord:
    """A row of scan.scans."""

    scan_id: str
    input: ScanInput
    received_at: datetime
    answer: Answer
    attempts: int
    applied_at: datetime | None
    #: W3C trace context of the SubmitScan that recorded it (for span links).
    traceparent: str = ""
    #: The end of the scan's hunt, as geo said when the scan was applied; None
    #: while 'received' or when geo did not know the tag or the hunt.
    hunt_ends_at: datetime | None = None
    #: When the scan's location was purged (services.scan.purge); its input's
    #: lat, lon and accuracy_m are None from then on.
    location_purged_at: datetime | None = None
