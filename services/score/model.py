"""The score service's domain values: small frozen dataclasses that store.py
and cache.py return and server.py maps to and from the proto messages; and
`ScoreApi`, what other services call (implemented over gRPC by client.py)."""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


class UnlockKind(enum.Enum):
    #: This call unlocked the checkpoint.
    UNLOCKED = "unlocked"
    #: The same scan_id again: the first answer, changed nothing.
    REPLAYED = "replayed"
    #: Another scan had unlocked the checkpoint already.
    ALREADY_UNLOCKED = "already_unlocked"


@dataclass(frozen=True)
class Score:
    """A player's total in a hunt. `version` increases by one with every new
    unlock (0 and reached_at None for a player without unlocks)."""

    total_points: int
    checkpoints_found: int
    reached_at: datetime | None
    version: int


ZERO = Score(total_points=0, checkpoints_found=0, reached_at=None, version=0)


@dataclass(frozen=True)
class UnlockedCheckpoint:
    checkpoint_id: str
    points_awarded: int
    first_finder: bool
    unlocked_at: datetime
    scan_id: str


@dataclass(frozen=True)
class Progress:
    score: Score
    #: Oldest first (by unlocked_at, then checkpoint_id).
    checkpoints: tuple[UnlockedCheckpoint, ...]


@dataclass(frozen=True)
class UnlockOutcome:
    kind: UnlockKind
    points_awarded: int
    first_finder: bool
    #: The player's score after the unlock (for a replay: as the first answer gave it).
    score: Score
    #: The scan that unlocked the checkpoint (this one, or an earlier one).
    unlock_scan_id: str


@dataclass(frozen=True)
class PlayerTotal:
    player_id: str
    total_points: int
    reached_at: datetime
    version: int


@dataclass(frozen=True)
class OutboxRow:
    id: int
    hunt_id: str
    player_id: str
    total_points: int
    reached_at: datetime
    version: int
    #: W3C trace context of the Unlock that wrote the row (may be empty).
    traceparent: str
    tracestate: str


@dataclass(frozen=True)
class UnlockAnswer:
    """What Unlock answers a caller (the wire has no score version)."""

    unlocked: bool  # False: the player had unlocked it already
    points_awarded: int
    first_finder: bool
    total_points: int
    checkpoints_found: int
    unlock_scan_id: str


class ScoreApi(Protocol):
    """What other services call: scan unlocks, the leaderboard rebuilds from
    every total. Implemented over gRPC by services.score.client.ScoreClient;
    errors are libs.errors kinds (UNAVAILABLE when score cannot answer)."""

    async def unlock(
        self,
        *,
        scan_id: str,
        hunt_id: str,
        player_id: str,
        checkpoint_id: str,
        points: int,
        first_finder_bonus: int,
        at: datetime,
        timeout_s: float | None = None,
    ) -> UnlockAnswer: ...

    def stream_scores(
        self, hunt_id: str, page_size: int = 1000, timeout_s: float = 600.0
    ) -> AsyncIterator[list[PlayerTotal]]:
        """Every total of a hunt, one page at a time (ordered by player_id)."""
        ...
