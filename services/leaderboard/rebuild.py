"""Rebuilding boards from the truth: the score service's StreamScores
(through `services.score.model.ScoreApi`; the composition root passes the
gRPC ScoreClient).

Protocol (one rebuild per hunt at a time, across every replica):
1. Take the hunt's lock (`keys.build_lock`, SET NX PX) holding a fresh build
   id and the new board's epoch; clear leftover temporary keys. Another
   process holding it means a rebuild is under way there: wait for it.
2. Stream every total from score, page by page, and write each page into the
   temporary keys (`keys.tmp_board`, `keys.tmp_players`) with the same version
   check as SubmitScores; up to `_WRITES_IN_FLIGHT` page writes overlap with the
   stream. Each page refreshes the PX of the lock and the temporary keys.
3. One script RENAMEs the temporary keys over the live ones (same hash tag,
   same slot), writes the build marker and drops the lock: readers see the old
   complete board or the new complete board, never a partial one.
4. On any failure the temporary keys and the lock are deleted; if the process
   dies instead, they expire together (LEADERBOARD_REBUILD_LOCK_S).

Submits during a rebuild: while the lock is held, SubmitScores applies every
update to the live board (if any) *and* to the temporary board, version-checked
both ways. So an update that arrives before the stream reaches its player is
kept if newer and one that the stream already covered is not lost; replays are
harmless. A hunt with no board and no rebuild is never written to directly:
the submit starts a rebuild, waits until it holds the lock, and applies again.

Single-flight: one rebuild task per hunt per process; RebuildBoard, reads of a
missing board and reconciliation all share it. Reconciliation rebuilds, every
LEADERBOARD_RECONCILE_S, the boards this process has served (bounded LRU),
skipping boards built less than half a period ago (another replica did it).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable

from opentelemetry.trace import Tracer

from libs import errors, validate
from libs.metrics import Metrics
from libs.timestamps import now_ms, to_ms
from services.leaderboard import keys
from services.leaderboard.cache import BoardStore
from services.leaderboard.model import RebuildResult, Update
from services.score.model import PlayerTotal, ScoreApi

log = logging.getLogger(__name__)

_WRITES_IN_FLIGHT = 4


def _to_update(total: PlayerTotal) -> Update:
    return Update(total.player_id, total.total_points, to_ms(total.reached_at), total.version)


class Rebuilder:
    """Rebuilds boards (single-flight per hunt) and reconciles them periodically."""

    def __init__(
        self,
        store: BoardStore,
        scores: ScoreApi,
        tracer: Tracer,
        metrics: Metrics,
        *,
        page_size: int = 2000,
        timeout_s: float = 600.0,
        lock_s: float = 30.0,
        reconcile_s: float = 600.0,
        max_hunts: int = 10_000,
        retry_after_s: float = 1.0,
    ) -> None:
        self._store = store
        self._scores = scores
        self._tracer = tracer
        self._page_size = page_size
        self._timeout_s = timeout_s
        self._lock_ms = int(lock_s * 1000)
        self._reconcile_s = reconcile_s
        self._max_hunts = max_hunts
        self._retry_after_s = retry_after_s
        self._running: dict[str, asyncio.Task[RebuildResult]] = {}
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._outcomes = metrics.counter(
            "leaderboard_rebuilds_total", "Board rebuilds by outcome.", ("outcome",)
        )
        self._last_took = metrics.gauge(
            "leaderboard_rebuild_last_seconds", "Duration of the last successful rebuild."
        )

    # -- hunts this process serves -------------------------------------------

    def remember(self, hunt_id: str) -> None:
        """Marks a hunt for reconciliation (bounded, least recently seen goes first)."""
        seen = self._seen
        if hunt_id in seen:
            seen.move_to_end(hunt_id)
            return
        seen[hunt_id] = None
        if len(seen) > self._max_hunts:
            seen.popitem(last=False)

    # -- single flight -------------------------------------------------------

    def _start(self, hunt_id: str) -> asyncio.Task[RebuildResult]:
        task = self._running.get(hunt_id)
        if task is None:
            task = asyncio.create_task(self._run(hunt_id), name=f"rebuild:{hunt_id}")
            self._running[hunt_id] = task
            task.add_done_callback(functools.partial(self._done, hunt_id))
        return task

    def _done(self, hunt_id: str, task: asyncio.Task[RebuildResult]) -> None:
        if self._running.get(hunt_id) is task:
            del self._running[hunt_id]
        if task.cancelled():
            return
        exc = task.exception()  # retrieved here, so a kicked rebuild never goes unseen
        if exc is not None:
            log.warning("rebuild of hunt %s failed: %s", hunt_id, exc)

    def kick(self, hunt_id: str) -> None:
        """Starts a rebuild of the hunt unless one runs; does not wait."""
        self.remember(hunt_id)
        self._start(hunt_id)

    async def rebuild(self, hunt_id: str) -> RebuildResult:
        """Rebuilds the hunt's board now (or joins the rebuild under way)."""
        self.remember(hunt_id)
        return await asyncio.shield(self._start(hunt_id))

    async def settled(self, hunt_id: str, timeout_s: float) -> None:
        """Starts a rebuild if none runs and waits up to `timeout_s` for it to
        end (successfully or not: the caller looks at the board again)."""
        self.remember(hunt_id)
        await asyncio.wait({self._start(hunt_id)}, timeout=timeout_s)

    async def warm(self, hunt_ids: Iterable[str]) -> int:
        """Rebuilds, one after another, the boards of `hunt_ids` that are
        missing (a Redis that came back empty), so that none is rebuilt under
        the first reads and submits; how many it rebuilt."""
        rebuilt = 0
        for hunt_id in hunt_ids:
            self.remember(hunt_id)
            if not (await self._store.state(hunt_id)).exists:
                await self.rebuild(hunt_id)
                rebuilt += 1
        return rebuilt

    @property
    def in_flight(self) -> int:
        return len(self._running)

    # -- one rebuild -----------------------------------------------------------

    async def _run(self, hunt_id: str) -> RebuildResult:
        started = time.monotonic()
        requested_ms = now_ms()
        with self._tracer.start_as_current_span(
            "leaderboard.rebuild", attributes={"hunt.id": hunt_id}
        ) as span:
            build_id = uuid.uuid4().hex[:16]
            try:
                while not await self._store.begin_build(
                    hunt_id, build_id, keys.epoch_for(now_ms()), self._lock_ms
                ):
                    players = await self._await_other(hunt_id, requested_ms, started)
                    if players is not None:
                        span.set_attribute("rebuild.by_other", True)
                        return RebuildResult(players, time.monotonic() - started)
                players = await self._fill(hunt_id, build_id)
            except BaseException:
                self._outcomes.labels("failed").inc()
                raise
            took = time.monotonic() - started
            span.set_attribute("player.count", players)
            self._outcomes.labels("ok").inc()
            self._last_took.set(took)
            log.info("rebuilt board of hunt %s: %s players in %.3fs", hunt_id, players, took)
            return RebuildResult(players, took)

    async def _await_other(self, hunt_id: str, requested_ms: int, started: float) -> int | None:
        """Waits while another process holds the lock; the player count of its
        board if it built one after `requested_ms`, else None (try again)."""
        while True:
            if time.monotonic() - started > self._timeout_s:
                raise errors.Unavailable(
                    f"board of hunt {hunt_id} is being rebuilt elsewhere",
                    retry_after_s=self._retry_after_s,
                    reason="BOARD_REBUILDING",
                )
            state = await self._store.state(hunt_id)
            if not state.rebuilding:
                if state.exists and state.built_at_ms >= requested_ms:
                    page = await self._store.top(hunt_id, 1, None)
                    return page.player_count if page is not None else None
                return None
            await asyncio.sleep(0.05)

    async def _fill(self, hunt_id: str, build_id: str) -> int:
        """Streams the truth into the temporary keys and publishes them."""
        store = self._store
        lock_ms = self._lock_ms
        writes: set[asyncio.Task[None]] = set()
        try:
            async for page in self._scores.stream_scores(
                hunt_id, page_size=self._page_size, timeout_s=self._timeout_s
            ):
                updates = [_to_update(t) for t in page if validate.is_id(t.player_id)]
                if len(updates) != len(page):
                    log.warning("hunt %s: score streamed invalid player ids; skipped", hunt_id)
                if not updates:
                    continue
                writes.add(
                    asyncio.create_task(store.write_page(hunt_id, build_id, lock_ms, updates))
                )
                if len(writes) >= _WRITES_IN_FLIGHT:
                    done, writes = await asyncio.wait(writes, return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        task.result()
            if writes:
                done, writes = await asyncio.wait(writes)
                for task in done:
                    task.result()
            return await store.finish_build(hunt_id, build_id, now_ms())
        except BaseException:
            for task in writes:
                task.cancel()
            await asyncio.gather(*writes, return_exceptions=True)
            try:
                await store.abort_build(hunt_id, build_id)
            except errors.ServiceError as exc:  # the keys expire with the lock anyway
                log.warning("hunt %s: could not clear rebuild %s: %s", hunt_id, build_id, exc)
            raise

    # -- reconciliation and shutdown ------------------------------------------

    async def run(self) -> None:
        """Background loop: periodic reconciliation; at exit, stops every rebuild."""
        try:
            if self._reconcile_s <= 0:
                await asyncio.Event().wait()
            while True:
                await asyncio.sleep(self._reconcile_s)
                await self.reconcile()
        finally:
            await self.close()

    async def reconcile(self) -> int:
        """Rebuilds every remembered board not built within half a period; how many."""
        rebuilt = 0
        fresh_ms = int(self._reconcile_s * 500)
        for hunt_id in list(self._seen):
            try:
                state = await self._store.state(hunt_id)
                if state.rebuilding or (state.exists and now_ms() - state.built_at_ms < fresh_ms):
                    continue
                await self.rebuild(hunt_id)
                rebuilt += 1
            except errors.ServiceError as exc:
                log.warning("reconciling hunt %s failed: %s", hunt_id, exc)
        return rebuilt

    async def close(self) -> None:
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
