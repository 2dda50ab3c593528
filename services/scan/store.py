"""The scan log in Postgres (`scan.scans`): the source of truth for scans.

A scan is inserted 'received' with a lease (`next_attempt_at`) before
anything else happens; applying it is a conditional update from 'received',
so it happens once whoever drives it. The relay claims received rows whose
lease has passed with FOR UPDATE SKIP LOCKED, so replicas share the work.

A row's location (lat, lon, accuracy_m) is purged once its retention has
passed (`purge_locations`, rule in services.scan.purge); every read copes with
a row without one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg
from opentelemetry import trace

from libs import worklog
from libs.batching import Batcher
from libs.pg import PRIME_ID, PRIME_TIME, Primer, unavailable_when_down
from libs.pgreads import ReadRoute
from services.scan.model import PLAUSIBLE, Answer, Outcome, Position, ScanInput, ScanRecord, Status

_COLUMNS = """scan_id, player_id, client_scan_id, hunt_id, tag_id, lat, lon, accuracy_m, scanned_at,
    received_at, status, outcome, points_awarded, total_points, checkpoint_id, checkpoint_name,
    first_finder, attempts, applied_at, traceparent, hunt_ends_at, location_purged_at"""


def _record(row: asyncpg.Record) -> ScanRecord:
    return ScanRecord(
        scan_id=row["scan_id"],
        input=ScanInput(
            player_id=row["player_id"],
            hunt_id=row["hunt_id"],
            tag_id=row["tag_id"],
            lat=row["lat"],
            lon=row["lon"],
            accuracy_m=row["accuracy_m"],
            scanned_at=row["scanned_at"],
            client_scan_id=row["client_scan_id"],
        ),
        received_at=row["received_at"],
        answer=Answer(
            scan_id=row["scan_id"],
            status=Status(row["status"]),
            outcome=Outcome(row["outcome"]) if row["outcome"] else None,
            points_awarded=row["points_awarded"],
            total_points=row["total_points"],
            checkpoint_id=row["checkpoint_id"],
            checkpoint_name=row["checkpoint_name"],
            first_finder=row["first_finder"],
        ),
        attempts=row["attempts"],
        applied_at=row["applied_at"],
        traceparent=row["traceparent"],
        hunt_ends_at=row["hunt_ends_at"],
        location_purged_at=row["location_purged_at"],
    )


_PLAUSIBLE = [o.value for o in PLAUSIBLE]

#: When a row's retention starts: its hunt's end, or, when that is not known,
#: the later of the scan's two times. The same expression as the partial index
#: `scans_location_due` (migrations/0002), so the purge can use it.
_RETENTION_STARTS = "coalesce(hunt_ends_at, greatest(scanned_at, received_at))"

#: Takes up to $2 rows whose location is due ($1: the retention), skipping
#: rows another statement holds (a replica's purge, a scan being applied).
PURGE_DUE = f"""SELECT scan_id FROM scan.scans
    WHERE location_purged_at IS NULL AND {_RETENTION_STARTS} < now() - $1::interval
    ORDER BY {_RETENTION_STARTS}
    LIMIT $2
    FOR UPDATE SKIP LOCKED"""


def _position(
    lat: float | None, lon: float | None, accuracy_m: float | None, at: datetime | None
) -> Position | None:
    """A row's position; None when there is no row or its location was purged."""
    if at is None or lat is None or lon is None or accuracy_m is None:
        return None
    return Position(lat=lat, lon=lon, accuracy_m=accuracy_m, at=at)


#: The new scans of one batch, one element per scan in each array; the
#: player's last plausible applied scan read for each player of the batch in
#: the same statement (the snapshot before the batch's own rows).
_INSERT_MANY = f"""WITH v AS (
        SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                             $6::float8[], $7::float8[], $8::float8[], $9::timestamptz[],
                             $10::text[], $11::float8[])
            AS v(scan_id, player_id, client_scan_id, hunt_id, tag_id, lat, lon, accuracy_m,
                 scanned_at, traceparent, lease_s)),
    previous AS (
        SELECT players.player_id, p.*
        FROM (SELECT DISTINCT player_id FROM v) AS players
        CROSS JOIN LATERAL (
            SELECT lat AS p_lat, lon AS p_lon, accuracy_m AS p_acc, scanned_at AS p_at
            FROM scan.scans
            WHERE player_id = players.player_id AND status = 'applied'
                  AND outcome = ANY($12::text[])
            ORDER BY scan_id DESC LIMIT 1) AS p),
    inserted AS (
        INSERT INTO scan.scans (scan_id, player_id, client_scan_id, hunt_id, tag_id, lat, lon,
            accuracy_m, scanned_at, next_attempt_at, traceparent, attempts)
        SELECT scan_id, player_id, client_scan_id, hunt_id, tag_id, lat, lon, accuracy_m,
               scanned_at, now() + make_interval(secs => lease_s), traceparent, 1
        FROM v ORDER BY scan_id
        ON CONFLICT (player_id, hunt_id, client_scan_id) DO NOTHING
        RETURNING {_COLUMNS})
    SELECT inserted.*, previous.p_lat, previous.p_lon, previous.p_acc, previous.p_at
    FROM inserted LEFT JOIN previous ON previous.player_id = inserted.player_id"""

#: The answers of one batch, applied where the row is still 'received'.
_APPLY_MANY = f"""WITH v AS (
        SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::bigint[], $5::text[],
                             $6::text[], $7::bool[], $8::timestamptz[])
            AS v(scan_id, outcome, points_awarded, total_points, checkpoint_id,
                 checkpoint_name, first_finder, hunt_ends_at))
    UPDATE scan.scans AS s SET status = 'applied', outcome = v.outcome,
        points_awarded = v.points_awarded, total_points = v.total_points,
        checkpoint_id = v.checkpoint_id, checkpoint_name = v.checkpoint_name,
        first_finder = v.first_finder, applied_at = now(), last_error = '',
        hunt_ends_at = v.hunt_ends_at
    FROM v WHERE s.scan_id = v.scan_id AND s.status = 'received'
    RETURNING {", ".join("s." + c.strip() for c in _COLUMNS.split(","))}"""


#: One new scan, and the player's last plausible applied scan (as `_INSERT_MANY`).
_INSERT_ONE = f"""WITH previous AS (
        SELECT lat AS p_lat, lon AS p_lon, accuracy_m AS p_acc, scanned_at AS p_at
        FROM scan.scans
        WHERE player_id = $2 AND status = 'applied' AND outcome = ANY($12::text[])
        ORDER BY scan_id DESC LIMIT 1),
    inserted AS (
        INSERT INTO scan.scans (scan_id, player_id, client_scan_id, hunt_id, tag_id, lat, lon,
            accuracy_m, scanned_at, next_attempt_at, traceparent, attempts)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now() + $10::interval, $11, 1)
        ON CONFLICT (player_id, hunt_id, client_scan_id) DO NOTHING
        RETURNING {_COLUMNS})
    SELECT * FROM inserted LEFT JOIN previous ON true"""

#: One answer, applied where the row is still 'received' (as `_APPLY_MANY`).
_APPLY_ONE = f"""UPDATE scan.scans SET status = 'applied', outcome = $2, points_awarded = $3,
        total_points = $4, checkpoint_id = $5, checkpoint_name = $6, first_finder = $7,
        applied_at = now(), last_error = '', hunt_ends_at = $8
    WHERE scan_id = $1 AND status = 'received'
    RETURNING {_COLUMNS}"""

#: SubmitScan's statements, primed on each connection the warm-up opens
#: (libs.pg.prime): one and many (a batch of none) of each.
PRIMERS: tuple[Primer, ...] = (
    (_INSERT_ONE, (*[PRIME_ID] * 5, 0.0, 0.0, 0.0, PRIME_TIME, timedelta(0), "", _PLAUSIBLE)),
    (_INSERT_MANY, (*[[]] * 11, _PLAUSIBLE)),
    (_APPLY_ONE, (PRIME_ID, Outcome.UNLOCKED.value, 0, 0, "", "", False, None)),
    (_APPLY_MANY, tuple([[]] * 8)),
)


@dataclass(frozen=True)
class _NewScan:
    scan_id: str
    scan: ScanInput
    lease: timedelta
    traceparent: str


@dataclass(frozen=True)
class Backlog:
    received: int
    oldest_age_s: float


def _applied(row: asyncpg.Record | None) -> bool:
    return row is not None and row["status"] == "applied"


class ScanStore:
    """`batch_size` > 1: new scans and answers that arrive while a statement
    is in flight go together in the next one (libs.batching; at most
    `batch_size` each, two statements in flight), one round trip and one
    commit for all of them."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        batch_size: int = 1,
        tracer: trace.Tracer | None = None,
        reads: ReadRoute | None = None,
    ) -> None:
        """`tracer`: for the span of a batch shared by several scans (libs.batching).
        `reads`: where GetScan and ListPlayerScans read (libs.pgreads; default
        the primary, `pool`)."""
        self._pool = pool
        self._reads = reads or ReadRoute(pool)
        self._inserts: Batcher[_NewScan, tuple[ScanRecord, Position | None] | None] | None = None
        self._applies: Batcher[tuple[Answer, datetime | None], ScanRecord] | None = None
        if batch_size > 1:
            self._inserts = Batcher(
                self._insert_many, max_size=batch_size, concurrency=2,
                name="scan.log.insert_batch", tracer=tracer,
            )  # fmt: skip
            self._applies = Batcher(
                self._apply_many, max_size=batch_size, concurrency=2,
                name="scan.log.apply_batch", tracer=tracer,
            )  # fmt: skip

    def batching(self) -> dict[str, tuple[int, int]]:
        """(statements, scans) sent by the batched writes so far, by write."""
        return {
            name: (batcher.batches, batcher.items)
            for name, batcher in (("insert", self._inserts), ("apply", self._applies))
            if batcher is not None
        }

    async def insert(
        self, scan_id: str, scan: ScanInput, lease: timedelta, traceparent: str
    ) -> tuple[ScanRecord, Position | None] | None:
        """Records a new scan; None when its key (player, hunt, client_scan_id)
        exists already.
        Also returns where the player's last plausible applied scan was (for
        the speed check), read in the same round trip: None when there is none
        or its location was purged."""
        if self._inserts is not None:
            return await self._inserts.submit(_NewScan(scan_id, scan, lease, traceparent))
        return await self._insert_one(scan_id, scan, lease, traceparent)

    @unavailable_when_down("record the scans")
    async def _insert_many(
        self, batch: list[_NewScan]
    ) -> list[tuple[ScanRecord, Position | None] | None]:
        if len(batch) == 1:
            one = batch[0]
            return [await self._insert_one(one.scan_id, one.scan, one.lease, one.traceparent)]
        rows = await self._pool.fetch(
            _INSERT_MANY,
            [n.scan_id for n in batch],
            [n.scan.player_id for n in batch],
            [n.scan.client_scan_id for n in batch],
            [n.scan.hunt_id for n in batch],
            [n.scan.tag_id for n in batch],
            [n.scan.lat for n in batch],
            [n.scan.lon for n in batch],
            [n.scan.accuracy_m for n in batch],
            [n.scan.scanned_at for n in batch],
            [n.traceparent for n in batch],
            [n.lease.total_seconds() for n in batch],
            _PLAUSIBLE,
        )
        found = {r["scan_id"]: r for r in rows}
        results: list[tuple[ScanRecord, Position | None] | None] = []
        for new in batch:
            row = found.get(new.scan_id)
            if row is None:
                results.append(None)  # its key exists already
            else:
                previous = _position(row["p_lat"], row["p_lon"], row["p_acc"], row["p_at"])
                results.append((_record(row), previous))
        return results

    @unavailable_when_down("record the scan")
    async def _insert_one(
        self, scan_id: str, scan: ScanInput, lease: timedelta, traceparent: str
    ) -> tuple[ScanRecord, Position | None] | None:
        row = await self._pool.fetchrow(
            _INSERT_ONE,
            scan_id,
            scan.player_id,
            scan.client_scan_id,
            scan.hunt_id,
            scan.tag_id,
            scan.lat,
            scan.lon,
            scan.accuracy_m,
            scan.scanned_at,
            lease,
            traceparent,
            _PLAUSIBLE,
        )
        if row is None:
            return None
        previous = _position(row["p_lat"], row["p_lon"], row["p_acc"], row["p_at"])
        return _record(row), previous

    @unavailable_when_down("read the scan")
    async def get(self, scan_id: str) -> ScanRecord | None:
        """GetScan's read: on the read replica when it is usable and has the
        scan applied; else (the scan not there yet, or not applied: its answer
        may be newer on the primary) on the primary. So GetScan right after
        SubmitScan finds the scan, and never answers older than SubmitScan did."""
        row = await self._reads.fetchrow(
            f"SELECT {_COLUMNS} FROM scan.scans WHERE scan_id = $1", scan_id, fresh=_applied
        )
        return _record(row) if row is not None else None

    @unavailable_when_down("read the scan")
    async def get_by_key(
        self, player_id: str, hunt_id: str, client_scan_id: str
    ) -> ScanRecord | None:
        """The scan recorded under an idempotency key, if any."""
        row = await self._pool.fetchrow(
            f"""SELECT {_COLUMNS} FROM scan.scans
                WHERE player_id = $1 AND hunt_id = $2 AND client_scan_id = $3""",
            player_id,
            hunt_id,
            client_scan_id,
        )
        return _record(row) if row is not None else None

    async def apply(self, answer: Answer, hunt_ends_at: datetime | None = None) -> ScanRecord:
        """Marks the scan applied with `answer`, unless it was applied already:
        either way, returns the row as it stands (the first answer wins).
        `hunt_ends_at`: the end of the scan's hunt when geo told it (when the
        location's retention starts), recorded in the same statement."""
        if self._applies is not None:
            return await self._applies.submit((answer, hunt_ends_at))
        return await self._apply_one(answer, hunt_ends_at)

    @unavailable_when_down("apply the scans")
    async def _apply_many(self, batch: list[tuple[Answer, datetime | None]]) -> list[ScanRecord]:
        if len(batch) == 1:
            return [await self._apply_one(*batch[0])]
        ordered = sorted(batch, key=lambda item: item[0].scan_id)  # rows locked in one order
        rows = await self._pool.fetch(
            _APPLY_MANY,
            [a.scan_id for a, _ in ordered],
            [a.outcome.value if a.outcome else None for a, _ in ordered],
            [a.points_awarded for a, _ in ordered],
            [a.total_points for a, _ in ordered],
            [a.checkpoint_id for a, _ in ordered],
            [a.checkpoint_name for a, _ in ordered],
            [a.first_finder for a, _ in ordered],
            [ends for _, ends in ordered],
        )
        found = {r["scan_id"]: _record(r) for r in rows}
        others = [a.scan_id for a, _ in batch if a.scan_id not in found]
        if others:
            # Applied by another driver: read in a new statement (a new snapshot).
            for r in await self._pool.fetch(
                f"SELECT {_COLUMNS} FROM scan.scans WHERE scan_id = ANY($1::text[])", others
            ):
                found[r["scan_id"]] = _record(r)
        return [found[a.scan_id] for a, _ in batch]

    @unavailable_when_down("apply the scan")
    async def _apply_one(self, answer: Answer, hunt_ends_at: datetime | None) -> ScanRecord:
        row = await self._pool.fetchrow(
            _APPLY_ONE,
            answer.scan_id,
            answer.outcome.value if answer.outcome else None,
            answer.points_awarded,
            answer.total_points,
            answer.checkpoint_id,
            answer.checkpoint_name,
            answer.first_finder,
            hunt_ends_at,
        )
        if row is None:
            # Applied by another driver: read it in a new statement (a new
            # snapshot), so the other driver's committed answer is what we see.
            row = await self._pool.fetchrow(
                f"SELECT {_COLUMNS} FROM scan.scans WHERE scan_id = $1", answer.scan_id
            )
        return _record(row)

    @unavailable_when_down("postpone the scan")
    async def postpone(self, scan_id: str, delay: timedelta, error: str) -> None:
        """Leaves the scan 'received' for the relay, after `delay`."""
        await self._pool.execute(
            """UPDATE scan.scans SET next_attempt_at = now() + $2::interval, last_error = $3
               WHERE scan_id = $1 AND status = 'received'""",
            scan_id,
            delay,
            error[:500],
        )

    @unavailable_when_down("claim the scan")
    async def claim(self, scan_id: str, lease: timedelta) -> ScanRecord | None:
        """Takes the lease of one received scan whose lease has passed."""
        row = await self._pool.fetchrow(
            f"""UPDATE scan.scans SET next_attempt_at = now() + $2::interval, attempts = attempts + 1
                WHERE scan_id = $1 AND status = 'received' AND next_attempt_at <= now()
                RETURNING {_COLUMNS}""",
            scan_id,
            lease,
        )
        return _record(row) if row is not None else None

    @unavailable_when_down("claim due scans")
    async def claim_due(self, limit: int, lease: timedelta) -> list[ScanRecord]:
        """Takes the leases of up to `limit` received scans that are due; rows
        another replica is claiming at the same moment are skipped."""
        rows = await self._pool.fetch(
            f"""WITH work AS (
                    UPDATE scan.scans
                    SET next_attempt_at = now() + $2::interval, attempts = attempts + 1
                    WHERE scan_id IN (
                        SELECT scan_id FROM scan.scans
                        WHERE status = 'received' AND next_attempt_at <= now()
                        ORDER BY next_attempt_at LIMIT $1
                        FOR UPDATE SKIP LOCKED)
                    RETURNING {_COLUMNS}),
                {worklog.counted("scan", "work", "$3", "$4")}
                SELECT * FROM work""",
            limit,
            lease,
            "redrive",
            worklog.WORKER,
        )
        return sorted((_record(r) for r in rows), key=lambda r: r.scan_id)

    @unavailable_when_down("read the previous position")
    async def previous_position(self, player_id: str, before_scan_id: str) -> Position | None:
        """Where the player's last plausible applied scan before this one was;
        None when there is none or its location was purged. (An older scan
        would still be a sound check, but finding one walks every purged row
        of the player; the caller then simply has no speed check.)"""
        row = await self._pool.fetchrow(
            """SELECT lat, lon, accuracy_m, scanned_at FROM scan.scans
               WHERE player_id = $1 AND scan_id < $2 AND status = 'applied' AND outcome = ANY($3::text[])
               ORDER BY scan_id DESC LIMIT 1""",
            player_id,
            before_scan_id,
            _PLAUSIBLE,
        )
        if row is None:
            return None
        return _position(row["lat"], row["lon"], row["accuracy_m"], row["scanned_at"])

    @unavailable_when_down("list the player's scans")
    async def list_player(
        self, player_id: str, hunt_id: str, before_scan_id: str, limit: int
    ) -> list[ScanRecord]:
        """A player's scans, newest first, strictly before `before_scan_id` if
        set; on the read replica when it is usable (bounded staleness: a scan
        of the last `PG_READ_MAX_LAG_S` may not be listed yet)."""
        rows = await self._reads.fetch(
            f"""SELECT {_COLUMNS} FROM scan.scans
                WHERE player_id = $1 AND ($2 = '' OR hunt_id = $2) AND ($3 = '' OR scan_id < $3)
                ORDER BY scan_id DESC LIMIT $4""",
            player_id,
            hunt_id,
            before_scan_id,
            limit,
        )
        return [_record(r) for r in rows]

    @unavailable_when_down("purge locations")
    async def purge_locations(self, retention: timedelta, limit: int) -> list[str]:
        """Purges the location of up to `limit` rows whose retention has
        passed; returns the player of each row purged (fewer than `limit`: no
        more rows are due now, or the rest are held by another statement)."""
        rows = await self._pool.fetch(
            f"""WITH due AS ({PURGE_DUE}), work AS (
                    UPDATE scan.scans AS s
                    SET lat = NULL, lon = NULL, accuracy_m = NULL, location_purged_at = now()
                    FROM due WHERE s.scan_id = due.scan_id
                    RETURNING s.player_id),
                {worklog.counted("scan", "work", "$3", "$4")}
                SELECT player_id FROM work""",
            retention,
            limit,
            "location-purge",
            worklog.WORKER,
        )
        return [r["player_id"] for r in rows]

    @unavailable_when_down("read the backlog")
    async def backlog(self) -> Backlog:
        row = await self._pool.fetchrow(
            """SELECT count(*) AS n, coalesce(extract(epoch FROM now() - min(received_at)), 0) AS age
               FROM scan.scans WHERE status = 'received'"""
        )
        return Backlog(received=row["n"], oldest_age_s=float(row["age"]))
