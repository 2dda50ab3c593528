"""The scan flow: admit, record, check in, score, apply — once per scan.

`ScanFlow.submit` runs for SubmitScan; `ScanFlow.drive` applies a recorded
scan and is shared by SubmitScan and the re-drive, so a scan is decided the same
way whoever drives it. Idempotency is by (player_id, hunt_id,
client_scan_id), and has three layers:
  1. copies in this process share one task (so 100 concurrent copies cost one
     processing and get one answer);
  2. the admission script in Redis returns the stored answer of a copy seen
     before, or marks this copy pending (copies on other replicas wait);
  3. Postgres's unique key decides when Redis lost it.
A copy whose request differs from the first (another tag, place, accuracy or
time under the same key) is refused with IDEMPOTENCY_KEY_REUSED, naming the
first scan, and changes no scan: in process it waits for the other request to
settle and then goes through the layers on its own; Redis keeps the first
request's fingerprint with its answer (a pending mark carries one too, but the
scan id to name is only known once the row is read); Postgres compares the row.
Such a copy may still spend a rate-limit token when Redis had lost the answer.
Applying is a conditional update from 'received', and score's Unlock is
idempotent by scan_id, so a scan driven twice is still applied once.

Latency: a new scan's geo CheckIn runs while its row is being inserted (the
check only reads the catalog and notes where the player is; nothing is
unlocked before the row is durable), and the answer is written to Redis after
SubmitScan has answered (losing it costs only a Postgres read for a retry).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from opentelemetry import propagate, trace

from libs import backoff, errors
from libs.admission import AdaptiveLimit, LimitSettings
from libs.deadlines import Budget
from libs.geometry import distance_m
from libs.metrics import Metrics
from libs.rediskit import Failure, RedisGuard
from services.geo.model import CheckInAnswer, GeoApi, TagStatus
from services.scan.cache import ScanCache
from services.scan.model import (
    PLAUSIBLE,
    Answer,
    Outcome,
    Position,
    ScanInput,
    ScanRecord,
    Status,
    new_scan_id,
)
from services.scan.store import ScanStore
from services.score.model import ScoreApi

log = logging.getLogger(__name__)


class RateLimited(errors.ResourceExhausted):
    reason = "SCAN_RATE_LIMITED"


class Overloaded(errors.Unavailable):
    reason = "SCAN_OVERLOADED"


class KeyReused(errors.FailedPrecondition):
    reason = "IDEMPOTENCY_KEY_REUSED"

    def __init__(self, scan: ScanInput, first_scan_id: str) -> None:
        super().__init__(
            f"client_scan_id {scan.client_scan_id} of player {scan.player_id} in hunt "
            f"{scan.hunt_id} was used for another scan ({first_scan_id}) with a different "
            "tag, location, accuracy or scanned_at; use a new client_scan_id for a new scan",
            metadata={"scan_id": first_scan_id},
        )


_TOO_LATE = errors.DeadlineExceeded(
    "the call's deadline is shorter than a scan takes now; call with a longer deadline"
)
_OVERLOADED = tuple(
    Overloaded(
        "the scan service is at capacity; retry shortly", retry_after_s=round(0.125 + 0.05 * i, 3)
    )
    for i in range(6)
)


@dataclass(frozen=True)
class FlowSettings:
    max_speed_mps: float = 50.0
    geo_timeout_s: float = 1.0
    score_timeout_s: float = 2.0
    #: How long a copy waits for another copy's answer, at most.
    wait_s: float = 5.0
    #: How long a driver holds a scan before the re-drive may take it over.
    lease_s: float = 15.0
    max_backoff_s: float = 60.0
    #: The most a scan waits on its Redis (a shortcut: on timeout the scan goes
    #: on without it, as when Redis is down), so a Redis that hangs or is
    #: failing over cannot stall scans behind its client's retries.
    redis_timeout_s: float = 0.25
    #: How many new SubmitScan scans are worked on at once: a limit that
    #: follows their latency (libs.admission; the re-drive's scans are not
    #: counted: their batch bounds them). A new scan beyond it is shed at once
    #: (UNAVAILABLE, retry hint), before anything is written; copies of a scan
    #: in flight still join it. Past the stack's capacity, taking on more work
    #: only queues it behind the rest, each holding a Postgres connection or a
    #: peer call, and makes every scan late.
    admission: LimitSettings = LimitSettings()


def implausible_speed(previous: Position, scan: Position, max_speed_mps: float) -> bool:
    """The speed check: True when the player cannot have come from `previous`
    to `scan` in time. GPS error (each fix's accuracy, capped at 50 m) is given
    to the player, and at least 1 s is assumed between the fixes."""
    gap = distance_m(previous.lat, previous.lon, scan.lat, scan.lon)
    gap -= min(previous.accuracy_m, 50.0) + min(scan.accuracy_m, 50.0)
    if gap <= 0:
        return False
    seconds = abs((scan.at - previous.at).total_seconds())
    return gap / max(seconds, 1.0) > max_speed_mps


def catalog_verdict(check: CheckInAnswer, at: datetime) -> Outcome | None:
    """What geo's answer alone decides, in this order: a hunt that does not
    exist, a tag that is not an active checkpoint of the hunt, a hunt not
    playable at `at`, a player out of range. None: the scan goes on."""
    if check.tag_status is TagStatus.UNKNOWN_HUNT:
        return Outcome.UNKNOWN_HUNT
    if check.tag_status is not TagStatus.FOUND:
        return Outcome.UNKNOWN_TAG
    if not check.hunt_active_at(at):
        return Outcome.HUNT_NOT_ACTIVE
    if not check.in_range:
        return Outcome.OUT_OF_RANGE
    return None


async def decide(
    record: ScanRecord,
    check: CheckInAnswer,
    previous_position: Callable[[], Awaitable[Position | None]],
    score: ScoreApi,
    *,
    max_speed_mps: float,
    budget: Budget,
    score_timeout_s: float,
) -> Answer:
    """The scan's outcome, in the order the rules apply: geo's answer
    (`catalog_verdict`), then the speed check against the player's previous
    plausible position (read only when it matters), then score's Unlock
    (UNLOCKED, or ALREADY_UNLOCKED), given `score_timeout_s` or what `budget`
    leaves by then. A peer's error passes through: the caller leaves the scan
    'received' for the re-drive."""
    scan = record.input
    outcome = catalog_verdict(check, scan.scanned_at)
    if outcome is None:
        previous = await previous_position()
        if previous is not None and implausible_speed(previous, scan.position(), max_speed_mps):
            outcome = Outcome.IMPLAUSIBLE_SPEED
    named = check.tag_status is TagStatus.FOUND  # only then is the checkpoint in the answer
    answer = Answer(
        scan_id=record.scan_id,
        status=Status.APPLIED,
        outcome=outcome,
        checkpoint_id=check.checkpoint_id if named else "",
        checkpoint_name=check.checkpoint_name if named else "",
    )
    if outcome is not None:
        return answer
    unlock = await score.unlock(
        scan_id=record.scan_id,
        hunt_id=scan.hunt_id,
        player_id=scan.player_id,
        checkpoint_id=check.checkpoint_id,
        points=check.points,
        first_finder_bonus=check.first_finder_bonus,
        at=scan.scanned_at,
        timeout_s=budget.timeout(score_timeout_s),
    )
    return dataclasses.replace(
        answer,
        outcome=Outcome.UNLOCKED if unlock.unlocked else Outcome.ALREADY_UNLOCKED,
        points_awarded=unlock.points_awarded,
        total_points=unlock.total_points,
        first_finder=unlock.first_finder,
    )


class ScanFlow:
    def __init__(
        self,
        store: ScanStore,
        cache: ScanCache,
        geo: GeoApi,
        score: ScoreApi,
        metrics: Metrics,
        settings: FlowSettings,
    ) -> None:
        self._store = store
        self._cache = cache
        self._geo = geo
        self._score = score
        self._settings = settings
        self._inflight: dict[tuple[str, str, str], tuple[ScanInput, asyncio.Task[Answer]]] = {}
        #: Answers being written to Redis after their call returned.
        self._remembering: set[asyncio.Task[None]] = set()
        self._outcomes = metrics.counter("scans_total", "Scans answered, by outcome.", ("outcome",))
        self._redis_errors = metrics.counter(
            "scan_redis_errors_total", "Scan Redis calls that failed (served from Postgres)."
        )
        #: Every scan Redis call: at most redis_timeout_s, and on failure the
        #: scan goes on without Redis (fail open; Postgres keeps it idempotent).
        self._redis = RedisGuard(
            "scan redis", timeout_s=settings.redis_timeout_s, on_failure=self._redis_failed
        )
        self._limit = AdaptiveLimit(settings.admission)
        self._shed = metrics.counter(
            "scans_shed_total",
            "New scans refused before any work: the admission limit was reached (limit), "
            "or the caller's deadline left less than the fastest scan takes (deadline).",
            ("reason",),
        )
        metrics.gauge_fn(
            "scan_admission_limit", "New scans taken on at once, at most (adaptive).",
            lambda: self._limit.limit,
        )  # fmt: skip
        metrics.gauge_fn(
            "scan_admission_in_flight", "New scans being worked on.",
            lambda: self._limit.in_flight,
        )  # fmt: skip

    # -- SubmitScan ------------------------------------------------------------

    async def submit(self, scan: ScanInput, budget: Budget) -> Answer:
        # What the scan is, on the call's server span (one span fewer per
        # scan than a span of its own; the trace shows the same).
        span = trace.get_current_span()
        recording = span.is_recording()
        if recording:
            span.set_attributes(
                {"hunt.id": scan.hunt_id, "player.id": scan.player_id, "tag.id": scan.tag_id}
            )
        key = scan.key
        running = self._inflight.get(key)
        while running is not None and not running[0].same_request(scan):
            # Another request under this key is in flight here: once it is
            # settled, this one goes through the layers below on its own
            # (refused if the other was recorded, recorded if it was not),
            # so neither inherits the other's answer or error.
            await asyncio.wait({running[1]})
            running = self._inflight.get(key)
        if running is None:
            self._admit(key, budget)
            # Shielded: a caller that hangs up does not stop a scan half way.
            task = asyncio.ensure_future(self._admitted(scan, budget))
            self._inflight[key] = (scan, task)
            task.add_done_callback(functools.partial(self._settled, key))
        else:
            task = running[1]  # a copy of this very request: share its answer
        answer = await asyncio.shield(task)
        outcome = answer.outcome.value if answer.outcome else "pending"
        if recording:
            span.set_attributes({"scan.id": answer.scan_id, "scan.outcome": outcome})
        self._outcomes.labels(outcome).inc()
        return answer

    def refusal(
        self, key: tuple[str, str, str], time_left: float | None
    ) -> errors.ServiceError | None:
        """Why a SubmitScan under `key` is refused before any work, or None:
        a copy of a scan in flight always joins it; a new scan is refused
        when the caller's deadline (`time_left`, seconds) is shorter than the
        fastest scan lately (it would be answered too late), or when the
        admission limit is reached. The refusals are a few shared objects
        (the transport encodes each once)."""
        if key in self._inflight:
            return None
        if time_left is not None and time_left < self._limit.baseline_s:
            self._shed.labels("deadline").inc()
            return _TOO_LATE
        if self._limit.in_flight >= self._limit.limit:
            self._shed.labels("limit").inc()
            return random.choice(_OVERLOADED)  # jittered hints: refused callers spread out
        return None

    def _admit(self, key: tuple[str, str, str], budget: Budget) -> None:
        """Takes a place for a new scan, or raises its refusal."""
        refused = self.refusal(key, budget.left())
        if refused is not None:
            raise refused.with_traceback(None)  # shared: drop the last raise's frames
        self._limit.try_acquire()

    async def _admitted(self, scan: ScanInput, budget: Budget) -> Answer:
        """A new scan that holds a place under the admission limit; gives the
        place back with its latency when it went the whole way (an answer
        from Redis, or a refusal, says nothing of the load)."""
        started = time.monotonic()
        latency: float | None = None
        try:
            answer, whole_way = await self._admit_and_process(scan, budget)
            if whole_way:
                latency = time.monotonic() - started
            return answer
        finally:
            self._limit.release(latency)

    def _redis_failed(self, failure: Failure) -> None:
        self._redis_errors.inc()
        if failure.op != "pending":
            log.warning("scan redis unavailable %s: %s", failure.op, failure.error)

    def _settled(self, key: tuple[str, str, str], task: asyncio.Task[Answer]) -> None:
        """A scan's task ended. Its callers may all have hung up: its error
        was answered to whoever waited, and is not reported again."""
        self._inflight.pop(key, None)
        if not task.cancelled():
            task.exception()

    async def _admit_and_process(self, scan: ScanInput, budget: Budget) -> tuple[Answer, bool]:
        """The answer, and whether this copy recorded and drove the scan
        itself (rather than finding a stored answer or another copy)."""
        admission = await self._redis.call(
            lambda: self._cache.admit(scan), op="at admission", default=None
        )
        if admission is None:
            # Fail open: without Redis there is no rate limit; Postgres keeps scans idempotent.
            return await self._first(scan, None, budget), True
        if admission.retry_after_ms is not None:
            raise RateLimited(
                f"player {scan.player_id} is scanning too often",
                retry_after_s=admission.retry_after_ms / 1000.0,
            )
        if admission.seen:
            answer = admission.answer
            if answer is not None and admission.fingerprint is not None:
                if admission.fingerprint != scan.fingerprint():
                    raise KeyReused(scan, answer.scan_id)
                if answer.status is Status.APPLIED:
                    return answer, False
            # Pending, not applied yet, or stored without a fingerprint:
            # Postgres has the first request and its answer.
            return await self._await_existing(scan, budget), False
        try:
            return await self._first(scan, admission.last, budget), True
        except (errors.Unavailable, KeyReused):
            # This copy gives up (the scan log is unreachable, or holds another
            # request under this key): drop its own pending mark, or the
            # client's retry would wait for it until the mark expires.
            await self._redis.call(
                lambda: self._cache.forget(scan), op="dropping its pending mark", default=False
            )
            raise

    async def _first(self, scan: ScanInput, last: Position | None, budget: Budget) -> Answer:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        check = asyncio.ensure_future(self._check_in(scan, budget))
        try:
            inserted = await self._store.insert(
                new_scan_id(),
                scan,
                timedelta(seconds=self._settings.lease_s),
                carrier.get("traceparent", ""),
            )
        except BaseException:
            _discard(check)
            raise
        if inserted is None:  # an earlier copy is in Postgres; Redis had lost its answer
            _discard(check)
            return await self._await_existing(scan, budget)
        record, previous = inserted
        if last is not None and last.at < scan.scanned_at:
            previous = last  # Redis knows a position the log did not show a moment ago
        return await self.drive(record, budget, previous=previous, previous_known=True, check=check)

    async def _await_existing(self, scan: ScanInput, budget: Budget) -> Answer:
        """Another copy of this scan exists (or is being recorded): return its
        answer once applied; take it over if its driver is gone."""
        wait = Budget.within(self._settings.wait_s) if budget.deadline is None else budget
        delay = 0.005
        while True:
            record = await self._store.get_by_key(*scan.key)
            if record is not None and not record.input.same_request(scan):
                raise KeyReused(scan, record.scan_id)
            if record is None:
                if not await self._pending_marker(scan):
                    return await self._first(
                        scan, None, budget
                    )  # the first copy died before recording
            elif record.answer.status is Status.APPLIED:
                return record.answer
            else:
                claimed = await self._store.claim(
                    record.scan_id, timedelta(seconds=self._settings.lease_s)
                )
                if claimed is not None:
                    return await self.drive(claimed, budget)
            if wait.expired():
                if record is None:
                    raise errors.Unavailable(
                        "this scan is being recorded by another request", retry_after_s=0.5
                    )
                return record.answer
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)

    async def _pending_marker(self, scan: ScanInput) -> bool:
        return await self._redis.call(
            lambda: self._cache.pending(scan), op="pending", default=False
        )

    # -- applying (SubmitScan and the re-drive) --------------------------------

    async def drive(
        self,
        record: ScanRecord,
        budget: Budget,
        previous: Position | None = None,
        previous_known: bool = False,
        check: asyncio.Future[CheckInAnswer] | None = None,
    ) -> Answer:
        """Decides and applies a recorded scan; leaves it 'received' for the
        re-drive when geo or score cannot answer now. `check`: its CheckIn, when
        the caller started it already."""
        scan = record.input
        try:
            answer, hunt_ends_at = await self._decide(
                record, previous, previous_known, budget, check
            )
        except errors.ServiceError as exc:
            delay = backoff.exponential(
                record.attempts, base_s=0.5, cap_s=self._settings.max_backoff_s, jitter=0.2
            )
            log.warning(
                "scan %s not applied yet (attempt %s): %s", record.scan_id, record.attempts, exc
            )
            await self._store.postpone(record.scan_id, timedelta(seconds=delay), str(exc))
            answer = Answer(scan_id=record.scan_id, status=Status.RECEIVED)
            self._remember(scan, answer, None)
            return answer
        final = (await self._store.apply(answer, hunt_ends_at)).answer
        position = None
        if final.outcome in PLAUSIBLE:
            position = scan.position()
        self._remember(scan, final, position)
        return final

    def _remember(self, scan: ScanInput, answer: Answer, position: Position | None) -> None:
        """Writes the answer (and the player's position) to Redis in the
        background: the caller need not wait for it, and a copy that arrives
        first finds the answer in Postgres."""
        task = asyncio.ensure_future(self._finish(scan, answer, position))
        self._remembering.add(task)
        task.add_done_callback(self._remembering.discard)

    async def _finish(self, scan: ScanInput, answer: Answer, position: Position | None) -> None:
        await self._redis.call(
            lambda: self._cache.finish(scan, answer, position),
            op="when storing the answer",
            default=None,
        )

    async def _check_in(self, scan: ScanInput, budget: Budget) -> CheckInAnswer:
        where = scan.position()
        return await self._geo.check_in(
            hunt_id=scan.hunt_id,
            player_id=scan.player_id,
            tag_id=scan.tag_id,
            lat=where.lat,
            lon=where.lon,
            accuracy_m=where.accuracy_m,
            at=scan.scanned_at,
            timeout_s=budget.timeout(self._settings.geo_timeout_s),
        )

    async def _decide(
        self,
        record: ScanRecord,
        previous: Position | None,
        previous_known: bool,
        budget: Budget,
        check_started: asyncio.Future[CheckInAnswer] | None = None,
    ) -> tuple[Answer, datetime | None]:
        """The answer, and the end of the scan's hunt when geo told it.
        `previous`: the player's last plausible position, when the caller
        knows it (`previous_known`); otherwise it is read from the log."""
        scan = record.input
        if record.location_purged_at is not None:
            # Still 'received' when its retention passed (services.scan.purge):
            # without its location it can no longer be checked in.
            log.warning("scan %s lost its location before it was applied", record.scan_id)
            if check_started is not None:
                _discard(check_started)
            return Answer(
                scan_id=record.scan_id, status=Status.APPLIED, outcome=Outcome.HUNT_NOT_ACTIVE
            ), None
        check = await (check_started or self._check_in(scan, budget))

        async def previous_position() -> Position | None:
            if previous_known:
                return previous
            return await self._store.previous_position(scan.player_id, record.scan_id)

        answer = await decide(
            record,
            check,
            previous_position,
            self._score,
            max_speed_mps=self._settings.max_speed_mps,
            budget=budget,
            score_timeout_s=self._settings.score_timeout_s,
        )
        return answer, check.hunt_ends_at

    # -- reads -----------------------------------------------------------------

    async def replay(self, scan: ScanInput, too_old: errors.InvalidArgument) -> Answer:
        """A SubmitScan whose scanned_at is past the max scan age: the answer
        of the scan recorded under its key if it is the same request (a late
        retry), else `too_old` (a new scan that old is refused)."""
        record = await self._store.get_by_key(*scan.key)
        if record is None:
            raise too_old
        if not record.input.same_request(scan):
            raise KeyReused(scan, record.scan_id)
        return record.answer

    async def get(self, scan_id: str) -> ScanRecord:
        record = await self._store.get(scan_id)
        if record is None:
            raise errors.NotFound(f"scan {scan_id} not found")
        return record

    async def list_player(
        self, player_id: str, hunt_id: str, before: str, limit: int
    ) -> list[ScanRecord]:
        return await self._store.list_player(player_id, hunt_id, before, limit)


def _discard(task: asyncio.Future) -> None:
    """Cancels a task whose result is no longer wanted, and retrieves its
    exception so that none goes unreported on the loop."""
    task.cancel()
    task.add_done_callback(lambda t: t.cancelled() or t.exception())
