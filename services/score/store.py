"""The score service's Postgres: unlocks, totals, progress, the stream of a
hunt's totals and the outbox the relay drains.

Every method is one statement (the Unlock is one call of `score.unlock()`,
created by migrations/0001), so each costs one round trip. Connection-level
failures surface as `Unavailable`; a scan_id reused for another checkpoint as
`FailedPrecondition`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from opentelemetry import trace

from libs import backoff, errors, pg, worklog
from libs.batching import Batcher
from services.score.model import (
    ZERO,
    OutboxRow,
    PlayerTotal,
    Progress,
    Score,
    UnlockedCheckpoint,
    UnlockKind,
    UnlockOutcome,
)

log = logging.getLogger(__name__)

_KINDS = {1: UnlockKind.UNLOCKED, 2: UnlockKind.REPLAYED, 3: UnlockKind.ALREADY_UNLOCKED}

_UNLOCK = "SELECT * FROM score.unlock($1, $2, $3, $4, $5, $6, $7, $8, $9)"

#: Many unlocks in one statement (one transaction), applied in the arrays'
#: order; one row each, with its position `i`.
_UNLOCK_MANY = """
SELECT v.i, u.* FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int[], $6::int[],
                            $7::timestamptz[], $8::text[], $9::text[]) WITH ORDINALITY
         AS v(scan_id, hunt_id, player_id, checkpoint_id, points, bonus, at, tp, ts, i)
CROSS JOIN LATERAL score.unlock(v.scan_id, v.hunt_id, v.player_id, v.checkpoint_id, v.points,
                                v.bonus, v.at, v.tp, v.ts) AS u
ORDER BY v.i"""

_SCORE = """
SELECT total, found, reached_at, version FROM score.player_scores
 WHERE hunt_id = $1 AND player_id = $2"""

# One statement, one snapshot: the total and the checkpoints always agree.
_PROGRESS = """
SELECT s.total, s.found, s.reached_at, s.version,
       u.checkpoint_id, u.points_awarded, u.first_finder, u.unlocked_at, u.scan_id
  FROM score.player_scores s
  LEFT JOIN score.unlocks u ON u.hunt_id = s.hunt_id AND u.player_id = s.player_id
 WHERE s.hunt_id = $1 AND s.player_id = $2
 ORDER BY u.unlocked_at, u.checkpoint_id"""

# Keyset pagination on the primary key (hunt_id, player_id).
_TOTALS_PAGE = """
SELECT player_id, total, reached_at, version FROM score.player_scores
 WHERE hunt_id = $1 AND player_id > $2
 ORDER BY player_id
 LIMIT $3"""

#: Locks the oldest rows no other relay holds and counts them as delivered
#: by this process (libs.worklog): the count commits only with the delete
#: that acknowledges them, and a row two relays sent would count twice.
_CLAIM = f"""
WITH work AS (
    SELECT id, hunt_id, player_id, total, reached_at, version, traceparent, tracestate
      FROM score.outbox
     ORDER BY id
     LIMIT $1
       FOR UPDATE SKIP LOCKED),
{worklog.counted("score", "work", "'outbox-delivery'", "$2")}
SELECT * FROM work ORDER BY id"""

_ACK = "DELETE FROM score.outbox WHERE id = ANY($1::bigint[])"

_OUTBOX_STATS = """
SELECT count(*) AS depth,
       coalesce(extract(epoch FROM now() - (SELECT created_at FROM score.outbox
                                              ORDER BY id LIMIT 1)), 0)::float8 AS age
  FROM score.outbox"""


#: Unlock's and the outbox relay's statements, primed on each connection the
#: warm-up opens (libs.pg.prime): an Unlock of made-up ids runs score.unlock()
#: (so its PL/pgSQL is compiled) and is rolled back; the batch, the claim and
#: the acknowledgement run on nothing.
PRIMERS: tuple[pg.Primer, ...] = (
    (_UNLOCK, (*[pg.PRIME_ID] * 4, 0, 0, pg.PRIME_TIME, "", "")),
    (_UNLOCK_MANY, tuple([[]] * 9)),
    (_CLAIM, (0, worklog.WORKER)),
    (_ACK, ([],)),
)


def _scan_id_reused(_exc: BaseException) -> errors.ServiceError:
    return errors.FailedPrecondition(
        "scan_id was already used to unlock another checkpoint", reason="SCAN_ID_REUSED"
    )


#: score.unlock() raises SC001 when a scan_id already unlocked another checkpoint.
_STATES: pg.ErrorStates = {"SC001": _scan_id_reused}

#: A statement that lost to another transaction (deadlock, serialization) and
#: was rolled back; run again up to _CONFLICT_ATTEMPTS times in all.
_CONFLICTS = frozenset({"40001", "40P01"})
_CONFLICT_ATTEMPTS = 3
#: A batch failing with these is run again one unlock at a time: a reused
#: scan_id (which one?), a race with a delete, a deadlock with another batch.
_ALONE = _CONFLICTS | {"SC001"}


def _mapped(what: str) -> contextlib.AbstractContextManager[None]:
    return pg.mapped_errors(f"scores: {what}", _STATES)


class OutboxClaim:
    """Outbox rows locked (FOR UPDATE SKIP LOCKED) by this relay until the
    claim ends; `acknowledge()` deletes them in the same transaction."""

    def __init__(self, connection: asyncpg.Connection, rows: list[OutboxRow]) -> None:
        self._connection = connection
        self.rows = rows

    async def acknowledge(self) -> None:
        with _mapped("outbox ack"):
            await self._connection.execute(_ACK, [row.id for row in self.rows])


@dataclass(frozen=True)
class _Unlock:
    scan_id: str
    hunt_id: str
    player_id: str
    checkpoint_id: str
    points: int
    first_finder_bonus: int
    at: datetime
    traceparent: str
    tracestate: str

    def args(self) -> tuple:
        return (self.scan_id, self.hunt_id, self.player_id, self.checkpoint_id, self.points,
                self.first_finder_bonus, self.at, self.traceparent, self.tracestate)  # fmt: skip


class ScoreStore:
    """`batch_size` > 1: unlocks that arrive while one statement is in flight
    go together in the next one (libs.batching: one round trip and one commit
    for all of them, applied in arrival order). When such a statement fails
    (a scan_id reused, a race with a delete, a deadlock with another replica's
    batch), nothing of it is kept and each of its unlocks runs again alone."""

    def __init__(
        self, pool: asyncpg.Pool, *, batch_size: int = 1, tracer: trace.Tracer | None = None
    ) -> None:
        """`tracer`: for the span of a batch shared by several unlocks (libs.batching)."""
        self._pool = pool
        self._unlocks: Batcher[_Unlock, UnlockOutcome] | None = None
        if batch_size > 1:
            self._unlocks = Batcher(
                self._unlock_many, max_size=batch_size, name="score.unlock_batch", tracer=tracer
            )

    def batching(self) -> tuple[int, int]:
        """(statements, unlocks) sent by the batched unlock so far."""
        if self._unlocks is None:
            return 0, 0
        return self._unlocks.batches, self._unlocks.items

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
        traceparent: str,
        tracestate: str,
    ) -> UnlockOutcome:
        """Applies one unlock (see score.unlock() in migrations/0001)."""
        unlock = _Unlock(scan_id, hunt_id, player_id, checkpoint_id, points,
                         first_finder_bonus, at, traceparent, tracestate)  # fmt: skip
        if self._unlocks is not None:
            return await self._unlocks.submit(unlock)
        return await self._unlock_one(unlock)

    async def _unlock_many(self, batch: list[_Unlock]) -> list[UnlockOutcome | BaseException]:
        if len(batch) > 1:
            columns = [[u.args()[k] for u in batch] for k in range(9)]
            with _mapped("unlock"):
                try:
                    rows = await self._pool.fetch(_UNLOCK_MANY, *columns)
                    return [_outcome(row[1:]) for row in rows]
                except asyncpg.PostgresError as exc:
                    if exc.sqlstate not in _ALONE:
                        raise  # e.g. Postgres is down: every unlock of the batch hears it
        # Alone, one after the other: each gets its own answer or error.
        results: list[UnlockOutcome | BaseException] = []
        for unlock in batch:
            try:
                results.append(await self._unlock_one(unlock))
            except errors.ServiceError as exc:
                results.append(exc)
        return results

    async def _unlock_one(self, unlock: _Unlock) -> UnlockOutcome:
        """One unlock in its own statement. A deadlock or serialization
        failure (with another replica's batch: the unlocks of a batch lock
        players' totals and first finds in arrival order) rolled the
        statement back whole, so it is run again, up to three times."""
        attempt = 1
        while True:
            with _mapped("unlock"):
                try:
                    return _outcome(await self._pool.fetchrow(_UNLOCK, *unlock.args()))
                except asyncpg.PostgresError as exc:
                    if exc.sqlstate not in _CONFLICTS or attempt == _CONFLICT_ATTEMPTS:
                        raise
            await asyncio.sleep(backoff.exponential(attempt, base_s=0.003, cap_s=0.05, jitter=0.5))
            attempt += 1

    async def score(self, hunt_id: str, player_id: str) -> Score:
        with _mapped("score"):
            row = await self._pool.fetchrow(_SCORE, hunt_id, player_id)
        if row is None:
            return ZERO
        return Score(
            total_points=row[0], checkpoints_found=row[1], reached_at=row[2], version=row[3]
        )

    async def progress(self, hunt_id: str, player_id: str) -> Progress:
        with _mapped("progress"):
            rows = await self._pool.fetch(_PROGRESS, hunt_id, player_id)
        if not rows:
            return Progress(score=ZERO, checkpoints=())
        first = rows[0]
        score = Score(
            total_points=first[0], checkpoints_found=first[1], reached_at=first[2], version=first[3]
        )
        checkpoints = tuple(
            UnlockedCheckpoint(
                checkpoint_id=r[4],
                points_awarded=r[5],
                first_finder=r[6],
                unlocked_at=r[7],
                scan_id=r[8],
            )
            for r in rows
            if r[4] is not None
        )
        return Progress(score=score, checkpoints=checkpoints)

    async def totals(self, hunt_id: str, page_size: int) -> AsyncIterator[list[PlayerTotal]]:
        """Every total of a hunt, ordered by player_id, `page_size` at a time.
        One query per page (keyset), so memory is one page however big the hunt."""
        after = ""
        while True:
            with _mapped("totals"):
                rows = await self._pool.fetch(_TOTALS_PAGE, hunt_id, after, page_size)
            if not rows:
                return
            yield [
                PlayerTotal(player_id=r[0], total_points=r[1], reached_at=r[2], version=r[3])
                for r in rows
            ]
            if len(rows) < page_size:
                return
            after = rows[-1][0]

    @contextlib.asynccontextmanager
    async def claim_outbox(self, limit: int) -> AsyncIterator[OutboxClaim]:
        """Locks up to `limit` of the oldest outbox rows no other relay holds,
        for the duration of the block (one transaction; rolled back on error)."""
        with _mapped("outbox claim"):
            async with self._pool.acquire() as connection, connection.transaction():
                rows = await connection.fetch(_CLAIM, limit, worklog.WORKER)
                yield OutboxClaim(connection, [_outbox_row(r) for r in rows])

    async def outbox_stats(self) -> tuple[int, float]:
        """(rows waiting, age in seconds of the oldest)."""
        with _mapped("outbox stats"):
            row = await self._pool.fetchrow(_OUTBOX_STATS)
        return int(row[0]), float(row[1])


def _outcome(row: Sequence) -> UnlockOutcome:
    """An UnlockOutcome from score.unlock()'s row."""
    return UnlockOutcome(
        kind=_KINDS[row[0]],
        points_awarded=row[1],
        first_finder=row[2],
        score=Score(
            total_points=row[3], checkpoints_found=row[4], reached_at=row[5], version=row[6]
        ),
        unlock_scan_id=row[7],
    )


def _outbox_row(r: Sequence) -> OutboxRow:
    return OutboxRow(
        id=r[0],
        hunt_id=r[1],
        player_id=r[2],
        total_points=r[3],
        reached_at=r[4],
        version=r[5],
        traceparent=r[6],
        tracestate=r[7],
    )
