"""The score service's Redis hot tier: a player's total (`keys.player_score`)
and unlocked checkpoints (`keys.player_checkpoints`) per (hunt, player), 30 s
TTL, written through after each commit and refilled from Postgres on a miss.

Postgres is the truth; this tier may lose anything at any time (allkeys-lru,
flush, restart). Its rules:
- Every write is one Lua script on one slot (`write_through.lua`, `fill.lua`,
  run by `libs.rediskit.Script`) that writes only when its version is newer
  than the cached one, so racing writers never leave an older total.
- The checkpoint set is served only when complete: it carries the version it is
  complete for (`_v`), which must equal the score's version.
- Every call goes through one `libs.rediskit.RedisGuard`: a short deadline,
  at most `rediskit.GUARD_IN_FLIGHT` at once; nothing here raises to the caller. Reads
  answer None (a miss) and writes give up quietly (counted and logged, rate
  limited). A write that failed twice marks the key dirty in a bounded L1 map,
  so this process reads that player from Postgres until a refill succeeds, and
  is retried once in the background with a longer deadline.
- A process that starts trusts no key until it has written or refilled it
  itself, for one TTL: an earlier process may have died (or timed out)
  between a commit and its write-through, leaving an older total that
  expires within the TTL; its dirty marks died with it.
- After a few consecutive connection failures the guard's breaker skips
  Redis for a moment, so a dead Redis costs nothing per call (a silent one
  costs at most the deadline).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from datetime import datetime
from pathlib import Path
from typing import cast

from libs.cache import MISSING, TtlCache
from libs.metrics import Metrics
from libs.rediskit import (
    AnyRedis,
    Breaker,
    CacheUnavailable,
    Failure,
    RedisContract,
    RedisGuard,
    Script,
)
from libs.timestamps import from_us, to_us
from services.score import keys
from services.score.model import Progress, Score, UnlockedCheckpoint

log = logging.getLogger(__name__)

#: the Redis table of docs/ARCHITECTURE.md: hot tier: total, found, version per (hunt, player) (30 s TTL); unlocked set.
CONTRACT = RedisContract(policy="allkeys-lru")

_HERE = Path(__file__).parent
#: A committed unlock, written through (`record_unlock`, `run_repairs`).
_WRITE_THROUGH = Script(_HERE / "write_through.lua")
#: A score or progress read from Postgres (`fill_score`, `fill_progress`).
_FILL = Script(_HERE / "fill.lua")

_REPAIR_QUEUE = 1024
_DIRTY_MAX = 100_000


def _us(value: datetime | None) -> str:
    return "" if value is None else str(to_us(value))


def _time(us: str) -> datetime | None:
    return None if us == "" else from_us(int(us))


def encode_checkpoint(cp: UnlockedCheckpoint) -> str:
    return f"{cp.points_awarded}|{1 if cp.first_finder else 0}|{_us(cp.unlocked_at)}|{cp.scan_id}"


def decode_checkpoint(checkpoint_id: str, value: str) -> UnlockedCheckpoint:
    points, first, at, scan_id = value.split("|", 3)
    return UnlockedCheckpoint(
        checkpoint_id=checkpoint_id,
        points_awarded=int(points),
        first_finder=first == "1",
        unlocked_at=from_us(int(at)),  # always written with a time
        scan_id=scan_id,
    )


class RateLimitedWarning:
    """At most one warning per `interval_s` on `logger`, saying how many were held back."""

    def __init__(self, logger: logging.Logger, interval_s: float = 10.0) -> None:
        self._log = logger
        self._interval = interval_s
        self._last = -interval_s
        self._held = 0

    def __call__(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last < self._interval:
            self._held += 1
            return
        self._log.warning(message + " (%d similar held back)", *args, self._held)
        self._last = now
        self._held = 0


class HotTier:
    def __init__(
        self,
        redis: AnyRedis,
        metrics: Metrics,
        *,
        ttl_s: float = 30.0,
        timeout_s: float = 0.005,
        repair_timeout_s: float = 0.25,
        breaker_failures: int = 5,
        breaker_s: float = 1.0,
        dirty_max: int = _DIRTY_MAX,
        suspect_s: float | None = None,
    ) -> None:
        """`suspect_s`: how long after start only keys this process wrote or
        refilled are trusted (default: the TTL, the longest an earlier
        process's older total can live)."""
        self._redis = redis
        self._ttl_ms = str(int(ttl_s * 1000))
        self._ttl_s = ttl_s
        self._repair_timeout_s = repair_timeout_s
        self._breaker_s = breaker_s
        #: Players whose write-through failed: key -> the version Redis lacks.
        self._dirty: TtlCache[str, int] = TtlCache(dirty_max, ttl_s)
        self._dirty_max = dirty_max
        #: When the dirty map overflowed: trust no key until then.
        self._distrust_until = 0.0
        #: Until then (one TTL after start) only the keys this process wrote
        #: or refilled are trusted (`_verified`).
        self._suspect_until = time.monotonic() + (ttl_s if suspect_s is None else suspect_s)
        self._verified: TtlCache[str, int] = TtlCache(dirty_max, ttl_s)
        self._repairs: asyncio.Queue[tuple[list[str], list[str], int]] = asyncio.Queue(
            _REPAIR_QUEUE
        )
        self._metrics = metrics
        self._errors = metrics.counter(
            "score_hot_tier_errors_total",
            "Hot-tier calls that failed or were skipped (breaker open), by operation.",
            ("op",),
        )
        self._warn = RateLimitedWarning(log)
        self._breaker = Breaker(breaker_failures, breaker_s)
        self._guard = RedisGuard(
            "score redis",
            timeout_s=timeout_s,
            breaker=self._breaker,
            on_failure=self._failed,
        )

    # -- plumbing -----------------------------------------------------------

    def _failed(self, failure: Failure) -> None:
        self._errors.labels(failure.op).inc()
        if failure.error is None:  # skipped: the breaker is open
            return
        if failure.opened:
            self._warn(
                "score redis failing (%s); skipping it for %.1fs", failure.error, self._breaker_s
            )
        else:
            self._warn("score redis %s failed: %r", failure.op, failure.error)

    def _trusted(self, key: str) -> bool:
        now = time.monotonic()
        if self._distrust_until and now < self._distrust_until:
            return False
        if now < self._suspect_until and self._verified.get(key) is MISSING:
            return False
        return self._dirty.get(key) is MISSING

    def _mark_dirty(self, key: str, version: int) -> None:
        if len(self._dirty) >= self._dirty_max:
            self._distrust_until = time.monotonic() + self._ttl_s
        self._dirty.put(key, version)

    def _clean(self, key: str, version: int) -> None:
        """Redis holds `version` of `key` (or a newer one) now."""
        lacking = self._dirty.get(key)
        if lacking is not MISSING and version >= lacking:
            self._dirty.invalidate(key)
        if time.monotonic() < self._suspect_until:
            self._verified.put(key, version)

    # -- writes ---------------------------------------------------------------

    async def record_unlock(
        self, hunt_id: str, player_id: str, score: Score, checkpoint: UnlockedCheckpoint
    ) -> None:
        """Writes a committed unlock through (never raises)."""
        score_key = keys.player_score(hunt_id, player_id)
        redis_keys = [score_key, keys.player_checkpoints(hunt_id, player_id)]
        args = [
            str(score.version),
            str(score.total_points),
            str(score.checkpoints_found),
            _us(score.reached_at),
            self._ttl_ms,
            checkpoint.checkpoint_id,
            encode_checkpoint(checkpoint),
        ]
        for _attempt in range(2):
            try:
                await self._guard.call(
                    lambda: _WRITE_THROUGH.run(self._redis, redis_keys, args), op="write"
                )
            except CacheUnavailable:
                if self._breaker.tripped:
                    break
                continue
            self._clean(score_key, score.version)
            return
        self._mark_dirty(score_key, score.version)
        try:
            self._repairs.put_nowait((redis_keys, args, score.version))
        except asyncio.QueueFull:
            self._errors.labels("repair_dropped").inc()

    async def run_repairs(self) -> None:
        """Background loop: retries failed write-throughs once, longer deadline."""
        while True:
            redis_keys, args, version = await self._repairs.get()
            try:
                await self._guard.call(
                    functools.partial(_WRITE_THROUGH.run, self._redis, redis_keys, args),
                    op="repair",
                    timeout_s=self._repair_timeout_s,
                )
            except CacheUnavailable:
                continue
            self._clean(redis_keys[0], version)

    async def fill_score(self, hunt_id: str, player_id: str, score: Score) -> None:
        """Caches a score read from Postgres, unless a newer one is cached."""
        await self._fill_keys(hunt_id, player_id, score, None)

    async def fill_progress(self, hunt_id: str, player_id: str, progress: Progress) -> None:
        """Caches a progress read from Postgres, unless newer ones are cached."""
        await self._fill_keys(hunt_id, player_id, progress.score, progress.checkpoints)

    async def _fill_keys(
        self,
        hunt_id: str,
        player_id: str,
        score: Score,
        checkpoints: tuple[UnlockedCheckpoint, ...] | None,
    ) -> None:
        score_key = keys.player_score(hunt_id, player_id)
        redis_keys = [score_key, keys.player_checkpoints(hunt_id, player_id)]
        args = [
            str(score.version),
            str(score.total_points),
            str(score.checkpoints_found),
            _us(score.reached_at),
            self._ttl_ms,
            "0" if checkpoints is None else "1",
        ]
        for cp in checkpoints or ():
            args += (cp.checkpoint_id, encode_checkpoint(cp))
        try:
            await self._guard.call(lambda: _FILL.run(self._redis, redis_keys, args), op="fill")
        except CacheUnavailable:
            return
        self._clean(score_key, score.version)

    # -- reads ----------------------------------------------------------------

    async def score(self, hunt_id: str, player_id: str) -> Score | None:
        """The cached score, or None (miss, dirty, or Redis unavailable)."""
        key = keys.player_score(hunt_id, player_id)
        if not self._trusted(key):
            return None
        fields = await self._guard.call(
            lambda: self._redis.hmget(key, "t", "f", "v", "r"), op="read", default=None
        )
        if fields is None:  # Redis did not answer: a miss
            return None
        total, found, version, reached = fields
        if total is None or found is None or version is None or reached is None:
            self._metrics.cache_miss("score", "redis")
            return None
        self._metrics.cache_hit("score", "redis")
        return Score(
            total_points=int(total),
            checkpoints_found=int(found),
            reached_at=_time(cast(str, reached)),  # decode_responses: str
            version=int(version),
        )

    async def progress(self, hunt_id: str, player_id: str) -> Progress | None:
        """The cached progress, or None unless the set is complete for the score."""
        key = keys.player_score(hunt_id, player_id)
        if not self._trusted(key):
            return None
        cps_key = keys.player_checkpoints(hunt_id, player_id)

        async def read() -> list:
            pipe = self._redis.pipeline(transaction=False)
            pipe.hmget(key, "t", "f", "v", "r")
            pipe.hgetall(cps_key)
            return await pipe.execute()

        both = await self._guard.call(read, op="read", default=None)
        if both is None:  # Redis did not answer: a miss
            return None
        fields, cps = both
        total, found, version, reached = fields
        if None in (total, found, version, reached) or cps.get("_v") != version:
            self._metrics.cache_miss("progress", "redis")
            return None
        self._metrics.cache_hit("progress", "redis")
        checkpoints = sorted(
            (decode_checkpoint(cp, value) for cp, value in cps.items() if cp != "_v"),
            key=lambda c: (c.unlocked_at, c.checkpoint_id),
        )
        score = Score(
            total_points=int(total),
            checkpoints_found=int(found),
            reached_at=_time(reached),
            version=int(version),
        )
        return Progress(score=score, checkpoints=tuple(checkpoints))
