"""The location purge: no player's location outlives the retention setting
(`SCAN_LOCATION_RETENTION_S`, 7 days by default) after their hunt ends.

When a row's retention starts:
  - its hunt's end, when known: geo's CheckIn answers with the hunt, and the
    flow records its `ends_at` when it applies the scan (`hunt_ends_at`);
  - otherwise (geo knew neither the tag nor the hunt, or the scan is still
    'received'): the scan itself, by the later of `scanned_at` (device clock)
    and `received_at` (server clock). Nothing later is known about that scan,
    so waiting for anything else would keep the location longer than needed.
A row is purged once its start plus the retention has passed: lat, lon and
accuracy_m become NULL and `location_purged_at` is set; everything else stays
(outcome, points, times), so the log still explains every answer. A scan still
'received' when its location goes can no longer be checked in: the flow then
applies it as HUNT_NOT_ACTIVE (services.scan.service).

Each pass purges every due row in batches (`FOR UPDATE SKIP LOCKED`, so scan
replicas purging at once share the rows, and a scan being applied is simply
left for the next pass), then deletes the Redis last position
(`scan:last:{player}`) of the purged rows' players when it is older than the
retention. That key also expires by itself: `last_scan_ttl_s` after its scan,
capped at the retention by the composition root; the delete covers keys
written before a shorter retention was set.

Not here: geo's Redis keeps a player's location 30 s (`geo:loc`) and in the
live sets for 60 s, and geo's Postgres holds no player location.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from libs import errors
from libs.metrics import Metrics
from libs.pg import POSTGRES_ERRORS
from libs.rediskit import Failure, RedisGuard
from services.scan.cache import ScanCache
from services.scan.store import ScanStore

log = logging.getLogger(__name__)


class LocationPurge:
    def __init__(
        self,
        store: ScanStore,
        cache: ScanCache,
        metrics: Metrics,
        *,
        retention_s: float,
        interval_s: float = 300.0,
        batch: int = 1000,
    ) -> None:
        self._store = store
        self._cache = cache
        self._retention = timedelta(seconds=retention_s)
        self._interval_s = interval_s
        self._batch = batch
        self._purged = metrics.counter(
            "scan_locations_purged_total",
            "Player locations purged after their retention, by store (postgres rows, redis keys).",
            ("store",),
        )
        #: No budget of its own (a background pass, not a scan's path); a failed
        #: Redis call is logged and skipped.
        self._redis = RedisGuard("scan redis (location purge)", on_failure=_log_failure)

    async def run(self) -> None:
        """A pass every `interval_s`; a pass that fails is logged and the next
        one tries again (the rows it missed are still due then)."""
        while True:
            try:
                await self.run_once()
            except (errors.Unavailable, *POSTGRES_ERRORS) as exc:
                log.warning("location purge pass failed, next in %ss: %s", self._interval_s, exc)
            await asyncio.sleep(self._interval_s)

    async def run_once(self) -> int:
        """Purges every row due now, `batch` rows per statement; returns how many."""
        total = 0
        while True:
            players = await self._store.purge_locations(self._retention, self._batch)
            if players:
                total += len(players)
                self._purged.labels("postgres").inc(len(players))
                await self._forget_positions(players)
            if len(players) < self._batch:
                break
        if total:
            log.info("purged the location of %s scans", total)
        return total

    async def _forget_positions(self, players: list[str]) -> None:
        cutoff = datetime.now(UTC) - self._retention
        deleted = await self._redis.call(
            lambda: self._cache.forget_positions_before(players, cutoff),
            op="purging last positions",
            default=None,  # the keys still expire by their TTL
        )
        if deleted is not None:
            self._purged.labels("redis").inc(deleted)


def _log_failure(failure: Failure) -> None:
    log.warning("last positions not purged from redis: %s", failure.error)
