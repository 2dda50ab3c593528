"""The leaderboard service's domain values: small frozen dataclasses that
cache.py returns, service.py, rebuild.py and watch.py pass around, and
server.py and client.py map to and from the proto messages; and
`LeaderboardApi`, what other services call (implemented over gRPC by
client.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from libs import errors


@dataclass(frozen=True, slots=True)
class Update:
    """A player's total as the score service sent it (within one hunt)."""

    player_id: str
    total: int
    reached_ms: int
    version: int


@dataclass(frozen=True, slots=True)
class Entry:
    rank: int  # 1-based
    player_id: str
    total: int
    reached_ms: int


@dataclass(frozen=True, slots=True)
class Cursor:
    """The position after an entry: where the next page starts."""

    total: int
    reached_ms: int
    player_id: str


@dataclass(frozen=True, slots=True)
class TopPage:
    entries: tuple[Entry, ...]
    player_count: int
    next_cursor: Cursor | None


@dataclass(frozen=True, slots=True)
class Around:
    entries: tuple[Entry, ...]
    player_count: int


@dataclass(frozen=True, slots=True)
class SubmitCounts:
    """What a SubmitScores did: updates applied, and stale ones (not newer
    than the board's version) that changed nothing."""

    applied: int
    stale: int


@dataclass(frozen=True, slots=True)
class BoardState:
    """What a board is: its build (empty when missing), change counter, and
    whether a rebuild holds the lock."""

    build: str
    built_at_ms: int
    seq: int
    rebuilding: bool

    @property
    def exists(self) -> bool:
        return bool(self.build)


@dataclass(frozen=True, slots=True)
class RebuildResult:
    player_count: int
    took_s: float


@dataclass(frozen=True, slots=True)
class TopSnapshot:
    """A board's top as read at `as_of_ms`; `missing` when it had no board."""

    entries: tuple[Entry, ...]
    player_count: int
    as_of_ms: int
    missing: bool = False


class BuildLost(errors.Unavailable):
    """The rebuild's lock expired or was taken over; its work is void."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retry_after_s=1.0, reason="BOARD_REBUILD_LOST")


@dataclass(frozen=True)
class ScoreUpdate:
    """A player's total in a hunt, as a caller of SubmitScores sends it."""

    hunt_id: str
    player_id: str
    total_points: int
    reached_at: datetime
    version: int


class LeaderboardApi(Protocol):
    """What other services call: score's outbox relay submits totals, and
    while the leaderboard is unreachable waits for it to come back.
    Implemented over gRPC by services.leaderboard.client.LeaderboardClient."""

    def connected(self) -> bool:
        """Whether the leaderboard is reachable now."""
        ...

    async def wait_connected(self, timeout_s: float) -> bool:
        """Waits up to `timeout_s` for it to be reachable; whether it is."""
        ...

    async def submit_scores(
        self, updates: Sequence[ScoreUpdate], timeout_s: float | None = None
    ) -> SubmitCounts:
        """Applies totals (per player the newest version wins). Raises
        libs.errors.Unavailable / ResourceExhausted when the board cannot take
        them now: the caller keeps them and retries."""
        ...
