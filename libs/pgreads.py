"""Reads that tolerate bounded staleness, served by a Postgres read replica.

A service given `<SVC>_PG_READ_DSN` (a streaming standby of its primary)
sends the reads named in docs/ARCHITECTURE.md ("Reads on the read replica")
through a `ReadRoute`. It serves them from the standby while the standby's
replay lag is within `max_lag_s`. Otherwise, or while the standby is down,
the reads go to the primary. A watcher measures the lag on the standby itself
every `interval_s`:
- 0 when the standby has replayed all the WAL it received, while streaming
  from its primary;
- the age of the last transaction it replayed, when it has WAL still to
  replay (infinite when it has replayed none since it started);
- unknown (so reads go to the primary) when the standby does not answer, is
  not streaming, or the lag cannot be read.
A read the standby serves is at most about `max_lag_s + interval_s` old.

Each read also says when the standby's answer will not do (`fresh`), and is
then read again on the primary. A scan the standby does not have yet, or has
not seen applied, is one example: a client never gets an older answer than
one it was given. A failed read on the standby is read again on the primary,
and the route stops using the standby until the next good measure.

Metrics: `pg_read_replica_lag_seconds` (-1 when unknown),
`pg_read_replica_in_use` (1 while reads go to the standby),
`pg_read_replica_configured` (1 when a standby was given) and
`pg_reads_total{pool, reason}` (pool `standby` or `primary`; reason `replica`,
`no_replica`, `lagging`, `replica_down` or `not_fresh`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, TypeAlias

import asyncpg

from libs.metrics import Metrics
from libs.pg import POSTGRES_ERRORS

log = logging.getLogger(__name__)

#: The standby's replay lag, in seconds: 0 when it has replayed what it
#: received; infinity when it is behind but has replayed no transaction since
#: it started; NULL when it is not streaming from a primary. Run on the standby.
LAG_QUERY = """
SELECT CASE
    WHEN NOT pg_is_in_recovery() THEN 0
    WHEN (SELECT status FROM pg_stat_wal_receiver) IS DISTINCT FROM 'streaming' THEN NULL
    WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
    -- WAL to replay and no transaction replayed since the standby started: behind, by how much unknown
    ELSE coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8, 'Infinity')
END"""

Row: TypeAlias = asyncpg.Record


def _found(row: Row | None) -> bool:
    return row is not None


class ReadRoute:
    """Where a service's stale-tolerant reads go: the standby or the primary."""

    def __init__(
        self,
        primary: asyncpg.Pool,
        standby: asyncpg.Pool | None = None,
        *,
        max_lag_s: float = 1.0,
        interval_s: float = 0.5,
        metrics: Metrics | None = None,
    ) -> None:
        self.primary = primary
        self._standby = standby
        self.max_lag_s = max_lag_s
        self.interval_s = interval_s
        #: The last lag measured; None: unknown (down, not streaming, not measured yet).
        self.lag_s: float | None = None
        self._metrics = metrics
        if metrics is not None:
            self._reads = metrics.counter(
                "pg_reads_total",
                "Stale-tolerant Postgres reads by the pool that served them and why.",
                ("pool", "reason"),
            )
            metrics.gauge_fn(
                "pg_read_replica_lag_seconds",
                "Replay lag of the read replica as last measured (-1: unknown or none).",
                lambda: -1.0 if self.lag_s is None else self.lag_s,
            )
            metrics.gauge_fn(
                "pg_read_replica_in_use",
                "1 while the stale-tolerant reads go to the read replica.",
                lambda: 1.0 if self.standby_usable() else 0.0,
            )
            metrics.gauge_fn(
                "pg_read_replica_configured",
                "1 when the service was given a read replica (<SVC>_PG_READ_DSN).",
                lambda: 0.0 if self._standby is None else 1.0,
            )

    def standby_usable(self) -> bool:
        return self._standby is not None and self.lag_s is not None and self.lag_s <= self.max_lag_s

    def _pool(self) -> tuple[asyncpg.Pool, str]:
        if self._standby is None:
            return self.primary, "no_replica"
        if self.lag_s is None:
            return self.primary, "replica_down"
        if self.lag_s > self.max_lag_s:
            return self.primary, "lagging"
        return self._standby, "replica"

    def _count(self, pool: str, reason: str) -> None:
        if self._metrics is not None:
            self._reads.labels(pool, reason).inc()

    async def fetchrow(
        self, query: str, *args: object, fresh: Callable[[Row | None], bool] = _found, **kwargs: Any
    ) -> Row | None:
        """One row, from the standby when it is usable and its row is `fresh`
        (default: there is one); else from the primary."""
        return await self._read("fetchrow", fresh, query, args, kwargs)

    async def fetch(
        self,
        query: str,
        *args: object,
        fresh: Callable[[list[Row]], bool] = lambda _rows: True,
        **kwargs: Any,
    ) -> list[Row]:
        """Rows, from the standby when it is usable and its rows are `fresh`
        (default: any); else from the primary."""
        return await self._read("fetch", fresh, query, args, kwargs)

    async def _read(
        self, method: str, fresh: Callable[[Any], bool], query: str, args: tuple, kwargs: dict
    ) -> Any:
        """`pool.<method>(query, ...)` on the standby when usable and `fresh`
        with its answer; else on the primary, counted with the reason."""
        pool, reason = self._pool()
        if pool is not self.primary:
            try:
                answer = await getattr(pool, method)(query, *args, **kwargs)
            except POSTGRES_ERRORS as exc:
                self._lost(exc)
                reason = "replica_down"
            else:
                if fresh(answer):
                    self._count("standby", reason)
                    return answer
                reason = "not_fresh"
        self._count("primary", reason)
        return await getattr(self.primary, method)(query, *args, **kwargs)

    def _lost(self, exc: BaseException) -> None:
        if self.lag_s is not None:
            log.warning("read replica failed a read, reads go to the primary: %s", exc)
        self.lag_s = None

    async def measure(self) -> float | None:
        """The standby's replay lag now (None: unknown), kept in `lag_s`."""
        if self._standby is None:
            return None
        try:
            lag = await self._standby.fetchval(LAG_QUERY, timeout=max(self.interval_s, 1.0))
        except POSTGRES_ERRORS as exc:
            if self.lag_s is not None:
                log.warning("read replica unreachable, reads go to the primary: %s", exc)
            lag = None
        was_usable = self.standby_usable()
        self.lag_s = None if lag is None else max(0.0, float(lag))
        if was_usable and not self.standby_usable() and self.lag_s is not None:
            log.warning(
                "read replica lags %.2fs (bound %.2fs), reads go to the primary",
                self.lag_s,
                self.max_lag_s,
            )
        return self.lag_s

    async def watch(self) -> None:
        """Measures the lag every `interval_s` (a background loop)."""
        while True:
            await self.measure()
            await asyncio.sleep(self.interval_s)
