"""What the score service does, without gRPC or SQL: the unlock and the reads.

- **Unlock** commits to Postgres first (the truth: one transaction holds the
  unlock, the new total and the outbox row; the first-finder bonus is decided
  there too, by `score.unlock()` in migrations/0001, so that concurrent
  finders cannot both win), then wakes outbox delivery and writes the hot tier
  through, shielded from a caller that hangs up. A replay of a scan_id gets
  the first answer and writes nothing.
- **Reads** try the hot tier and fall back to Postgres with one load per key at
  a time (single-flight), refilling the hot tier. A player with nothing found
  in a hunt that geo's catalog does not know is NOT_FOUND (HUNT_NOT_FOUND);
  when geo cannot say, the zero score stands.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

from opentelemetry import propagate, trace

from libs.cache import SingleFlight
from services.geo.model import HuntNotFound, Hunts
from services.score.cache import HotTier
from services.score.model import (
    PlayerTotal,
    Progress,
    Score,
    UnlockedCheckpoint,
    UnlockKind,
    UnlockOutcome,
)
from services.score.store import ScoreStore

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _runs_to_its_end(
    method: Callable[_P, Coroutine[Any, Any, _R]],
) -> Callable[_P, Coroutine[Any, Any, _R]]:
    """The method runs as a task of its own, shielded from its caller's
    cancellation; its outcome is retrieved even when nobody waits for it."""

    @functools.wraps(method)
    async def shielded(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        task = asyncio.ensure_future(method(*args, **kwargs))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # heard by nobody else
        return await asyncio.shield(task)

    return shielded


class Scores:
    def __init__(
        self,
        store: ScoreStore,
        hot: HotTier,
        hunts: Hunts,
        on_commit: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self._hot = hot
        self._hunts = hunts
        self._on_commit = on_commit
        self._score_loads: SingleFlight[tuple[str, str], Score] = SingleFlight()
        self._progress_loads: SingleFlight[tuple[str, str], Progress] = SingleFlight()

    @_runs_to_its_end
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
    ) -> UnlockOutcome:
        """Commits the unlock, then writes it through. Runs to its end: a
        caller that hangs up (its deadline passed) does not stop it between
        the commit and the write-through, which would leave the hot tier an
        older total that this process still trusts."""
        # What the unlock is, on the call's server span (one span fewer per
        # unlock than a span of its own).
        span = trace.get_current_span()
        recording = span.is_recording()
        if recording:
            span.set_attributes(
                {"hunt.id": hunt_id, "player.id": player_id, "checkpoint.id": checkpoint_id}
            )
        carrier: dict[str, str] = {}
        propagate.inject(carrier)  # the outbox row carries this trace to the leaderboard
        outcome = await self._store.unlock(
            scan_id=scan_id,
            hunt_id=hunt_id,
            player_id=player_id,
            checkpoint_id=checkpoint_id,
            points=points,
            first_finder_bonus=first_finder_bonus,
            at=at,
            traceparent=carrier.get("traceparent", ""),
            tracestate=carrier.get("tracestate", ""),
        )
        if recording:
            span.set_attribute("unlock.outcome", outcome.kind.value)
        if outcome.kind is UnlockKind.UNLOCKED:
            self._on_commit()
            await self._hot.record_unlock(
                hunt_id,
                player_id,
                outcome.score,
                UnlockedCheckpoint(
                    checkpoint_id=checkpoint_id,
                    points_awarded=outcome.points_awarded,
                    first_finder=outcome.first_finder,
                    unlocked_at=at,
                    scan_id=scan_id,
                ),
            )
        return outcome

    async def score(self, hunt_id: str, player_id: str) -> Score:
        score = await self._hot.score(hunt_id, player_id)
        if score is None:
            score = await self._score_loads.do(
                (hunt_id, player_id), lambda: self._load_score(hunt_id, player_id)
            )
        if score.checkpoints_found == 0:
            await self._require_hunt(hunt_id)
        return score

    async def progress(self, hunt_id: str, player_id: str) -> Progress:
        progress = await self._hot.progress(hunt_id, player_id)
        if progress is None:
            progress = await self._progress_loads.do(
                (hunt_id, player_id), lambda: self._load_progress(hunt_id, player_id)
            )
        if progress.score.checkpoints_found == 0:
            await self._require_hunt(hunt_id)
        return progress

    def totals(self, hunt_id: str, page_size: int) -> AsyncIterator[list[PlayerTotal]]:
        """Every total of a hunt, in pages ordered by player_id (for rebuilds)."""
        return self._store.totals(hunt_id, page_size)

    async def _require_hunt(self, hunt_id: str) -> None:
        """A player with nothing found: NOT_FOUND when the hunt does not exist
        (geo's catalog, cached; when geo cannot say, the zero score stands)."""
        if await self._hunts.exists(hunt_id) is False:
            raise HuntNotFound(hunt_id)

    async def _load_score(self, hunt_id: str, player_id: str) -> Score:
        score = await self._store.score(hunt_id, player_id)
        await self._hot.fill_score(hunt_id, player_id, score)
        return score

    async def _load_progress(self, hunt_id: str, player_id: str) -> Progress:
        progress = await self._store.progress(hunt_id, player_id)
        await self._hot.fill_progress(hunt_id, player_id, progress)
        return progress
