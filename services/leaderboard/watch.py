"""WatchTop: one watcher loop per hunt per process, however many clients watch.

A hunt's loop reads the top (of the largest limit any watcher asked for) at
most LEADERBOARD_WATCH_RATE times per second, and only when the board's
change marker (`build`, `seq` in `keys.meta`; one cheap round trip) moved. It
learns of a change at once when this process applied it (`changed`, from
SubmitScores: the read follows as soon as the rate allows), and by polling
the marker every LEADERBOARD_WATCH_POLL_S for changes that other replicas
applied. Each watcher has a mailbox of size one where the latest
board wins, so a slow client only ever skips boards and never slows the loop
or the other watchers. A watcher gets its first board at once (from the
loop's last read when it covers its limit, else the loop reads at once for the
new watchers only, without breaking the rate of the others), then a board
whenever its own top N (or the player count) changed. When the last watcher of
a hunt leaves, its loop stops; the service's shutdown ends every watch.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Iterable

from opentelemetry.instrumentation.utils import suppress_instrumentation

from libs import errors
from libs.metrics import Metrics
from libs.timestamps import now_ms
from services.leaderboard.model import Entry, TopSnapshot
from services.leaderboard.service import Leaderboard

log = logging.getLogger(__name__)


class Subscription:
    """One watcher: a mailbox of size one (the latest snapshot wins)."""

    __slots__ = ("limit", "fresh", "_item", "_ready", "_last", "_closed", "_error", "_hub", "_feed")

    def __init__(self, hub: WatchHub, feed: _Feed, limit: int) -> None:
        self.limit = limit
        self.fresh = True  # has not had its first snapshot
        self._item: TopSnapshot | None = None
        self._ready = asyncio.Event()
        self._last: tuple[tuple[Entry, ...], int] | None = None
        self._closed = False
        self._error: errors.ServiceError | None = None
        self._hub = hub
        self._feed = feed

    def offer(self, snapshot: TopSnapshot) -> None:
        """Replaces what waits in the mailbox, unless this watcher's view is unchanged."""
        if snapshot.missing:
            if not self.fresh:
                return  # an established watcher waits for the rebuilt board
            self.fresh = False
            self._item = snapshot
            self._ready.set()
            return
        entries = snapshot.entries[: self.limit]
        view = (entries, snapshot.player_count)
        self.fresh = False
        if view == self._last:
            return
        self._last = view
        # The loop's own snapshot when it is this watcher's whole view: watchers
        # then share one object, and the servicer builds its answer once for all.
        if len(entries) < len(snapshot.entries):
            snapshot = TopSnapshot(entries, snapshot.player_count, snapshot.as_of_ms)
        self._item = snapshot
        self._ready.set()

    def fail(self, error: errors.ServiceError) -> None:
        self._error = error
        self._ready.set()

    async def next(self) -> TopSnapshot:
        """The next snapshot for this watcher (waits until there is one)."""
        await self._ready.wait()
        if self._error is not None:
            raise self._error
        self._ready.clear()
        item, self._item = self._item, None
        assert item is not None
        return item

    def close(self) -> None:
        """Leaves the hunt's feed; idempotent."""
        if not self._closed:
            self._closed = True
            self._hub._leave(self._feed, self)


class _Feed:
    """The watchers of one hunt and its loop."""

    def __init__(self, hunt_id: str) -> None:
        self.hunt_id = hunt_id
        self.subscriptions: set[Subscription] = set()
        self.wake = asyncio.Event()
        self.snapshot: TopSnapshot | None = None
        self.snapshot_limit = 0
        #: This process applied a change to the board since the last poll.
        self.changed = False
        self.task: asyncio.Task[None] | None = None

    def max_limit(self) -> int:
        return max((s.limit for s in self.subscriptions), default=1)

    def covers(self, limit: int) -> bool:
        snapshot = self.snapshot
        return (
            snapshot is not None
            and not snapshot.missing
            and (self.snapshot_limit >= limit or len(snapshot.entries) >= snapshot.player_count)
        )


class WatchHub:
    """Every WatchTop stream of this process, grouped by hunt."""

    def __init__(
        self,
        board: Leaderboard,
        metrics: Metrics,
        rate_per_s: float = 4.0,
        poll_s: float | None = None,
    ) -> None:
        self._board = board
        self._interval = 1.0 / rate_per_s
        self._poll_s = self._interval if poll_s is None else poll_s
        self._feeds: dict[str, _Feed] = {}
        self._closed = False
        metrics.gauge_fn("leaderboard_watch_loops", "Watcher loops running.", lambda: self.loops)
        metrics.gauge_fn("leaderboard_watchers", "WatchTop streams open.", lambda: self.watchers)
        self._reads = metrics.counter(
            "leaderboard_watch_reads_total", "Board reads made by watcher loops."
        )

    # Read by the metrics thread too: tuple() copies the values atomically.
    @property
    def loops(self) -> int:
        return sum(1 for f in tuple(self._feeds.values()) if f.task and not f.task.done())

    @property
    def watchers(self) -> int:
        return sum(len(f.subscriptions) for f in tuple(self._feeds.values()))

    def subscribe(self, hunt_id: str, limit: int) -> Subscription:
        """A new watcher of the hunt's top `limit`; call `close()` when done."""
        if self._closed:
            raise errors.Unavailable("the service is shutting down", retry_after_s=0.5)
        feed = self._feeds.get(hunt_id)
        if feed is None:
            feed = _Feed(hunt_id)
            self._feeds[hunt_id] = feed
            feed.task = asyncio.create_task(self._loop(feed), name=f"watch:{hunt_id}")
            feed.task.add_done_callback(functools.partial(self._loop_ended, feed))
        subscription = Subscription(self, feed, limit)
        feed.subscriptions.add(subscription)
        if feed.snapshot is not None and feed.covers(limit):
            subscription.offer(feed.snapshot)
        else:
            feed.wake.set()
        return subscription

    def changed(self, hunt_ids: Iterable[str]) -> None:
        """This process changed these hunts' boards: their watchers' loops
        look now (as soon as their rate allows) rather than at the next poll."""
        for hunt_id in hunt_ids:
            feed = self._feeds.get(hunt_id)
            if feed is not None:
                feed.changed = True
                feed.wake.set()

    def _leave(self, feed: _Feed, subscription: Subscription) -> None:
        feed.subscriptions.discard(subscription)
        if not feed.subscriptions:
            if self._feeds.get(feed.hunt_id) is feed:
                del self._feeds[feed.hunt_id]
            if feed.task is not None:
                feed.task.cancel()

    def _loop_ended(self, feed: _Feed, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:  # a bug: end these watches rather than leave them hanging
            log.error("watch loop of hunt %s failed", feed.hunt_id, exc_info=exc)
            if self._feeds.get(feed.hunt_id) is feed:
                del self._feeds[feed.hunt_id]
            for subscription in list(feed.subscriptions):
                subscription.fail(errors.Unavailable("watching failed; retry", retry_after_s=1.0))

    def close(self) -> None:
        """Ends every watch (at shutdown: clients reconnect to another replica)."""
        self._closed = True
        for feed in list(self._feeds.values()):
            for subscription in list(feed.subscriptions):
                subscription.fail(
                    errors.Unavailable("the service is shutting down", retry_after_s=0.5)
                )
            if feed.task is not None:
                feed.task.cancel()
        self._feeds.clear()

    async def _loop(self, feed: _Feed) -> None:
        interval, poll_s = self._interval, self._poll_s
        next_poll = 0.0  # the marker's next poll
        read_at = 0.0  # the earliest next read of the board for every watcher
        last_change: tuple[str, int] | None = None
        with suppress_instrumentation():  # polls are not traces
            while True:
                due = min(next_poll, read_at) if feed.changed else next_poll
                delay = due - time.monotonic()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(feed.wake.wait(), delay)
                feed.wake.clear()
                fresh = [s for s in feed.subscriptions if s.fresh]
                now = time.monotonic()
                try:
                    if now >= next_poll or (feed.changed and now >= read_at):
                        feed.changed = False
                        next_poll = now + poll_s
                        state = await self._board.state(feed.hunt_id)
                        change = (state.build, state.seq)
                        if change != last_change and now >= read_at:
                            if last_change is not None:  # the first read: everyone's first board
                                read_at = now + interval
                            await self._read(feed, list(feed.subscriptions))
                            last_change = change
                        elif change != last_change:  # polled before the rate allows a read
                            feed.changed = True
                            if fresh:
                                await self._read(feed, fresh)
                        elif fresh:
                            await self._read(feed, fresh)
                    elif fresh:
                        await self._read(feed, fresh)
                except errors.ServiceError as exc:  # Redis unreachable: try at the next poll
                    log.warning("watch loop of hunt %s: %s", feed.hunt_id, exc)

    async def _read(self, feed: _Feed, to: list[Subscription]) -> None:
        limit = feed.max_limit()
        self._reads.inc()
        page = await self._board.fresh_top(feed.hunt_id, limit)
        if page is None:
            snapshot = TopSnapshot((), 0, now_ms(), missing=True)
        else:
            snapshot = TopSnapshot(page.entries, page.player_count, now_ms())
        feed.snapshot = snapshot
        feed.snapshot_limit = limit
        for subscription in to:
            subscription.offer(snapshot)
