"""The re-drive: applies scans left 'received' (a crash, geo or score down).
(Its metrics keep their first name, `scan_relay_*`, for dashboards and alerts.)

It claims due rows in batches (FOR UPDATE SKIP LOCKED, with a lease, so
replicas share the work without driving one scan twice at once) and drives
each through the same `ScanFlow.drive` as SubmitScan, with backoff and an
attempt count kept on the row. Each drive is a span linked to the scan's
original trace.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta

from opentelemetry import propagate, trace

from libs import errors
from libs.deadlines import Budget
from libs.metrics import Metrics
from services.scan.service import ScanFlow
from services.scan.store import ScanStore

log = logging.getLogger(__name__)


class Redrive:
    def __init__(
        self,
        store: ScanStore,
        flow: ScanFlow,
        tracer: trace.Tracer,
        metrics: Metrics,
        *,
        interval_s: float = 1.0,
        batch: int = 50,
        concurrency: int = 8,
        lease_s: float = 15.0,
        drive_timeout_s: float = 5.0,
    ) -> None:
        self._store = store
        self._flow = flow
        self._tracer = tracer
        self._interval_s = interval_s
        self._batch = batch
        self._lease = timedelta(seconds=lease_s)
        self._drive_timeout_s = drive_timeout_s
        self._slots = asyncio.Semaphore(concurrency)
        self._backlog = metrics.gauge("scan_relay_backlog", "Scans recorded but not applied yet.")
        self._oldest = metrics.gauge(
            "scan_relay_oldest_seconds", "Age of the oldest scan not applied yet."
        )
        self._driven = metrics.counter(
            "scan_relay_driven_total", "Scans driven by the relay, by result.", ("result",)
        )
        self._last_report = 0.0

    async def run(self) -> None:
        while True:
            try:
                driven = await self.run_once()
                await self._report()
            except errors.Unavailable as exc:  # Postgres is down: the rows wait there
                log.warning("scan relay paused: %s", exc)
                driven = 0
            if driven < self._batch:
                await asyncio.sleep(self._interval_s)

    async def run_once(self) -> int:
        """Drives one batch of due scans; returns how many were claimed."""
        records = await self._store.claim_due(self._batch, self._lease)
        await asyncio.gather(*(self._drive(r) for r in records))
        return len(records)

    async def _drive(self, record) -> None:
        async with self._slots:
            links = []
            if origin := _span_context(record.traceparent):
                links.append(trace.Link(origin))
            with self._tracer.start_as_current_span(
                "scan.relay.drive",
                links=links,
                attributes={"scan.id": record.scan_id, "hunt.id": record.input.hunt_id, "player.id": record.input.player_id,
                            "scan.attempt": record.attempts},
            ):  # fmt: skip
                answer = await self._flow.drive(record, Budget.within(self._drive_timeout_s))
                self._driven.labels(answer.status.value).inc()

    async def _report(self) -> None:
        now = time.monotonic()
        if now - self._last_report < 5.0:
            return
        self._last_report = now
        backlog = await self._store.backlog()
        self._backlog.set(backlog.received)
        self._oldest.set(backlog.oldest_age_s)


def _span_context(traceparent: str) -> trace.SpanContext | None:
    if not traceparent:
        return None
    context = propagate.extract({"traceparent": traceparent})
    span_context = trace.get_current_span(context).get_span_context()
    return span_context if span_context.is_valid else None
