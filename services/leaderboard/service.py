"""The leaderboard's rules: submit totals, read the boards, rebuild them.

Sits between the servicer (which converts protos) and the Redis store
(`cache.BoardStore`), in model.py's types. It owns the rules a caller sees:
- a board that is missing (no build marker) is never served nor written
  piecemeal. A read of a missing board asks geo's catalog whether the hunt
  exists (NOT_FOUND if not), then rebuilds the board (an empty one for a hunt
  nobody has scored in) and waits for it within the call's deadline; only a
  board that cannot be built in time answers UNAVAILABLE with a retry hint
  (the rebuild goes on). Submits start a rebuild, wait for it within their
  deadline and apply again, or answer UNAVAILABLE (the score outbox keeps the
  rows and retries);
- GetTop pages are kept in a bounded in-process cache for at most
  LEADERBOARD_TOP_CACHE_MS (a hot hunt's top 10 does not hit Redis per call),
  and concurrent misses of one page share one Redis call;
- every hunt served is remembered for reconciliation.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TypeVar

from opentelemetry.trace import Tracer

from libs import errors
from libs.cache import MISSING, SingleFlight, TtlCache
from libs.metrics import Metrics
from services.geo.model import HuntNotFound, Hunts
from services.leaderboard.cache import BoardStore
from services.leaderboard.model import (
    Around,
    BoardState,
    Cursor,
    Entry,
    RebuildResult,
    SubmitCounts,
    TopPage,
    Update,
)
from services.leaderboard.rebuild import Rebuilder

_TopKey = tuple[str, int, Cursor | None]
_T = TypeVar("_T")


class Leaderboard:
    def __init__(
        self,
        store: BoardStore,
        rebuilder: Rebuilder,
        hunts: Hunts,
        tracer: Tracer,
        metrics: Metrics,
        *,
        top_cache_ms: int = 200,
        top_cache_entries: int = 2048,
        retry_after_s: float = 1.0,
    ) -> None:
        self._store = store
        self._rebuilder = rebuilder
        self._hunts = hunts
        self._tracer = tracer
        self._metrics = metrics
        self._retry_after_s = retry_after_s
        self._top_cache: TtlCache[_TopKey, TopPage] = TtlCache(
            top_cache_entries, top_cache_ms / 1000.0
        )
        self._top_flight: SingleFlight[_TopKey, TopPage] = SingleFlight()

    def missing_error(self, hunt_id: str, *, rebuild: bool = True) -> errors.Unavailable:
        """The error for a missing board; starts its rebuild unless told not to."""
        if rebuild:
            self._rebuilder.kick(hunt_id)
        return errors.Unavailable(
            f"the board of hunt {hunt_id} is being rebuilt",
            retry_after_s=self._retry_after_s,
            reason="BOARD_REBUILDING",
        )

    async def _read(
        self, hunt_id: str, wait_s: float, read: Callable[[], Awaitable[_T | None]]
    ) -> _T:
        """`read()` of the board; when the board is missing: NOT_FOUND for a
        hunt that does not exist, else the board is rebuilt within `wait_s`
        and read again (UNAVAILABLE if it is still missing)."""
        found = await read()
        if found is None:
            await self._build_missing(hunt_id, wait_s)
            found = await read()
            if found is None:
                raise self.missing_error(hunt_id, rebuild=False)  # it is being built
        self._rebuilder.remember(hunt_id)
        return found

    async def _build_missing(self, hunt_id: str, wait_s: float) -> None:
        """Builds the board of a hunt geo's catalog knows, within `wait_s` in
        all (the catalog question included). A board is never made for a hunt
        that geo cannot vouch for: it would outlive the outage (boards have no
        TTL and are reconciled), so geo not answering is UNAVAILABLE here."""
        started = time.monotonic()
        await self._require_hunt(hunt_id, timeout_s=min(0.5, wait_s / 2))
        await self._rebuilder.settled(hunt_id, max(0.0, wait_s - (time.monotonic() - started)))

    async def _require_hunt(self, hunt_id: str, timeout_s: float | None = None) -> None:
        exists = await self._hunts.exists(hunt_id, timeout_s=timeout_s)
        if exists is False:
            raise HuntNotFound(hunt_id)
        if exists is None:
            raise errors.Unavailable(
                f"cannot tell whether hunt {hunt_id} exists now (geo's catalog does not answer)",
                retry_after_s=self._retry_after_s,
                reason="CATALOG_UNAVAILABLE",
            )

    async def ensure(self, hunt_id: str, wait_s: float) -> None:
        """Returns once the hunt has a board (for WatchTop), building a missing
        one within `wait_s`; NOT_FOUND for a hunt that does not exist."""

        async def exists() -> bool | None:
            return True if (await self._store.state(hunt_id)).exists else None

        await self._read(hunt_id, wait_s, exists)

    # -- writes -------------------------------------------------------------

    async def submit(
        self, by_hunt: Mapping[str, Sequence[Update]], wait_s: float = 1.0
    ) -> SubmitCounts:
        """Applies totals (one script per hunt, one pipeline). A hunt without a
        board gets one rebuilt first, within `wait_s`."""
        with self._tracer.start_as_current_span(
            "leaderboard.submit",
            attributes={
                "hunt.count": len(by_hunt),
                "update.count": sum(len(u) for u in by_hunt.values()),
            },
        ) as span:
            results = await self._store.submit(by_hunt)
            missing = [hunt for hunt, counts in results.items() if counts is None]
            if missing:
                span.set_attribute("hunt.missing", len(missing))
                await asyncio.gather(*(self._rebuilder.settled(h, wait_s) for h in missing))
                again = await self._store.submit({h: by_hunt[h] for h in missing})
                results.update(again)
                still = [hunt for hunt, counts in again.items() if counts is None]
                if still:
                    raise self.missing_error(still[0], rebuild=False)  # one just ended
            applied = stale = 0
            for hunt, counts in results.items():
                assert counts is not None  # every missing board was rebuilt above, or raised
                self._rebuilder.remember(hunt)
                applied += counts.applied
                stale += counts.stale
            span.set_attribute("update.applied", applied)
            return SubmitCounts(applied, stale)

    async def rebuild(self, hunt_id: str) -> RebuildResult:
        """RebuildBoard: NOT_FOUND for a hunt that does not exist, UNAVAILABLE
        while geo cannot say (no board is made for either)."""
        await self._require_hunt(hunt_id)
        return await self._rebuilder.rebuild(hunt_id)

    # -- reads --------------------------------------------------------------

    async def top(
        self, hunt_id: str, limit: int, cursor: Cursor | None = None, wait_s: float = 2.0
    ) -> TopPage:
        """A page of the board, best first (cached in process for a moment)."""
        key = (hunt_id, limit, cursor)
        with self._tracer.start_as_current_span(
            "leaderboard.get_top", attributes={"hunt.id": hunt_id, "limit": limit}
        ) as span:
            page = self._top_cache.get(key)
            if page is not MISSING:
                self._metrics.cache_hit("top", "l1")
                span.set_attribute("cache.hit", True)
                return page
            self._metrics.cache_miss("top", "l1")
            span.set_attribute("cache.hit", False)
            return await self._top_flight.do(key, lambda: self._load_top(key, wait_s))

    async def _load_top(self, key: _TopKey, wait_s: float) -> TopPage:
        hunt_id, limit, cursor = key
        page = await self._read(hunt_id, wait_s, lambda: self._store.top(hunt_id, limit, cursor))
        self._top_cache.put(key, page)
        return page

    async def fresh_top(self, hunt_id: str, limit: int) -> TopPage | None:
        """The top, read from Redis now (for watchers); None when missing (a
        rebuild is started)."""
        page = await self._store.top(hunt_id, limit, None)
        if page is None:
            self._rebuilder.kick(hunt_id)
        return page

    async def state(self, hunt_id: str) -> BoardState:
        return await self._store.state(hunt_id)

    async def rank(self, hunt_id: str, player_id: str, wait_s: float = 2.0) -> tuple[Entry, int]:
        """The player's entry (1-based rank) and the number of players."""
        with self._tracer.start_as_current_span(
            "leaderboard.get_rank", attributes={"hunt.id": hunt_id, "player.id": player_id}
        ):
            entry, count = await self._read(
                hunt_id, wait_s, lambda: self._store.rank(hunt_id, player_id)
            )
            if entry is None:
                raise _not_on_board(hunt_id, player_id)
            return entry, count

    async def around(self, hunt_id: str, player_id: str, n: int, wait_s: float = 2.0) -> Around:
        """The player and up to n players above and below."""
        with self._tracer.start_as_current_span(
            "leaderboard.get_around", attributes={"hunt.id": hunt_id, "player.id": player_id}
        ):
            found = await self._read(
                hunt_id, wait_s, lambda: self._store.around(hunt_id, player_id, n)
            )
            if not found.entries:
                raise _not_on_board(hunt_id, player_id)
            return found


def _not_on_board(hunt_id: str, player_id: str) -> errors.NotFound:
    return errors.NotFound(
        f"player {player_id} is not on the board of hunt {hunt_id}", reason="PLAYER_NOT_ON_BOARD"
    )
