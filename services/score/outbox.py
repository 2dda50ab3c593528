"""Outbox delivery (the outbox relay): sends committed totals to the leaderboard.

Unlock commits a row to `score.outbox` in its transaction and wakes the relay.
The relay claims up to `batch` of the oldest rows with `FOR UPDATE SKIP
LOCKED` (so several score processes share the work, each row in one batch at
a time), collapses rows of one (hunt, player) to the newest version, sends
them with one `SubmitScores`, and deletes the claimed rows in the same
transaction only when the leaderboard acknowledged the batch. The row locks
are held only while sending (the send has a deadline); a crashed relay's
locks die with its connection, and Unlock only inserts rows, so it never waits
on them. No lease column: nothing to update, nothing to expire.

A wake-up lingers 25 ms to fill a batch: with 5 ms, under load it sent one
or two rows a call, each call costing a claim transaction, a SubmitScores and
a board script, and the relay took a fifth of score's CPU. Without a wake-up
the relay polls every `flush_s`, so rows of other processes (or from before a
restart) go out within that. While the leaderboard is unavailable or pushes back, the
relay backs off exponentially and the rows wait; when it was unreachable, the
relay tries again as soon as the channel reconnects, so a leaderboard that was
down for a while is caught up at once, not after a backoff that grew meanwhile.
The delivery span `score.outbox.deliver` links to the trace of every Unlock it
carries.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.instrumentation.utils import suppress_instrumentation

from libs import errors
from libs.backoff import Backoff
from libs.metrics import Metrics
from services.leaderboard.model import LeaderboardApi, ScoreUpdate
from services.score.cache import RateLimitedWarning
from services.score.model import OutboxRow
from services.score.store import OutboxClaim, ScoreStore

log = logging.getLogger(__name__)

#: OTel's default limit of links per span.
_MAX_LINKS = 128


def collapse(rows: Sequence[OutboxRow]) -> list[OutboxRow]:
    """The newest version of each (hunt, player), in order of first appearance."""
    newest: dict[tuple[str, str], OutboxRow] = {}
    for row in rows:
        key = (row.hunt_id, row.player_id)
        held = newest.get(key)
        if held is None or row.version > held.version:
            newest[key] = row
    return list(newest.values())


def links_of(rows: Sequence[OutboxRow]) -> list[trace.Link]:
    """Span links to the distinct, valid trace contexts stored in `rows`."""
    links: list[trace.Link] = []
    seen: set[tuple[int, int]] = set()
    for row in rows:
        if not row.traceparent:
            continue
        carrier = {"traceparent": row.traceparent}
        if row.tracestate:
            carrier["tracestate"] = row.tracestate
        span_context = trace.get_current_span(propagate.extract(carrier)).get_span_context()
        ident = (span_context.trace_id, span_context.span_id)
        if not span_context.is_valid or ident in seen:
            continue
        seen.add(ident)
        links.append(trace.Link(span_context))
        if len(links) >= _MAX_LINKS:
            break
    return links


class OutboxDelivery:
    def __init__(
        self,
        store: ScoreStore,
        leaderboard: LeaderboardApi,
        tracer: trace.Tracer,
        metrics: Metrics,
        *,
        batch: int = 500,
        flush_s: float = 0.1,
        linger_s: float = 0.025,
        send_timeout_s: float = 2.0,
        backoff_min_s: float = 0.05,
        backoff_max_s: float = 5.0,
        stats_interval_s: float = 1.0,
    ) -> None:
        self._store = store
        self._leaderboard = leaderboard
        self._tracer = tracer
        self._batch = batch
        self._flush_s = flush_s
        self._linger_s = linger_s
        self._send_timeout_s = send_timeout_s
        self._backoff = Backoff(backoff_min_s, backoff_max_s)
        self._stats_interval_s = stats_interval_s
        self._wake = asyncio.Event()
        self._warn = RateLimitedWarning(log)
        self._depth = 0
        self._age_s = 0.0
        metrics.gauge_fn(
            "score_outbox_depth", "Outbox rows waiting for the leaderboard.", lambda: self._depth
        )
        metrics.gauge_fn(
            "score_outbox_oldest_age_seconds",
            "Age of the oldest outbox row (the leaderboard's lag).",
            lambda: self._age_s,
        )
        self._delivered = metrics.counter(
            "score_outbox_delivered_total", "Outbox rows acknowledged by the leaderboard."
        )
        self._failures = metrics.counter(
            "score_outbox_send_failures_total",
            "SubmitScores calls that failed, by reason.",
            ("reason",),
        )

    def wake(self) -> None:
        """Called after an Unlock committed an outbox row."""
        self._wake.set()

    async def run(self) -> None:
        """The relay loop (runtime.background); runs until cancelled."""
        next_stats = 0.0
        while True:
            woken = await self._wait(self._flush_s)
            if woken and self._linger_s > 0:
                await asyncio.sleep(self._linger_s)  # let a burst of commits fill the batch
            self._wake.clear()
            try:
                while await self.drain_once() >= self._batch:
                    pass  # a full batch: more are waiting
                self._backoff.reset()
            except (errors.Unavailable, errors.ResourceExhausted) as exc:
                await self._back_off(exc.reason, exc)
            except errors.ServiceError as exc:  # the board refused the batch: keep the rows
                log.error("leaderboard refused an outbox batch: %s", exc)
                await self._back_off(exc.reason, exc)
            now = time.monotonic()
            if now >= next_stats:
                next_stats = now + self._stats_interval_s
                await self._refresh_stats()

    async def _wait(self, timeout_s: float) -> bool:
        try:
            async with asyncio.timeout(timeout_s):
                await self._wake.wait()
        except TimeoutError:
            return False
        return True

    async def _back_off(self, reason: str, exc: Exception) -> None:
        self._failures.labels(reason).inc()
        delay = self._backoff.next()
        self._warn("outbox delivery failed (%s); retrying in %.2fs", exc, delay)
        if self._leaderboard.connected():
            await asyncio.sleep(delay)  # it answered: it pushes back, give it the delay
        elif await self._leaderboard.wait_connected(delay):
            # It was unreachable and is back: deliver now, not after a backoff
            # that grew while it was down (up to backoff_max_s late).
            self._backoff.reset()

    async def drain_once(self) -> int:
        """Claims, sends and acknowledges one batch; returns the rows it took.
        Raises Unavailable/ResourceExhausted (rows kept) when the board cannot
        take them."""
        with suppress_instrumentation():  # an empty poll is not worth a trace
            async with self._store.claim_outbox(self._batch) as claim:
                if claim.rows:
                    await self._deliver(claim)
                return len(claim.rows)

    async def _deliver(self, claim: OutboxClaim) -> None:
        rows = claim.rows
        newest = collapse(rows)
        updates = [
            ScoreUpdate(
                hunt_id=r.hunt_id,
                player_id=r.player_id,
                total_points=r.total_points,
                reached_at=r.reached_at,
                version=r.version,
            )
            for r in newest
        ]
        # A trace of its own (traced again: the poll above is suppressed),
        # linked to the trace of every Unlock it carries.
        token = otel_context.attach(otel_context.Context())
        try:
            with self._tracer.start_as_current_span(
                "score.outbox.deliver",
                kind=trace.SpanKind.PRODUCER,
                links=links_of(rows),
                attributes={"outbox.rows": len(rows), "outbox.updates": len(newest)},
            ):
                await self._leaderboard.submit_scores(updates, timeout_s=self._send_timeout_s)
                await claim.acknowledge()
        finally:
            otel_context.detach(token)
        self._delivered.inc(len(rows))

    async def _refresh_stats(self) -> None:
        try:
            with suppress_instrumentation():
                self._depth, self._age_s = await self._store.outbox_stats()
        except errors.Unavailable:
            pass  # the gauges keep their last values; the store logged it
