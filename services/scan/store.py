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

from libs.pg import unavailable_when_down
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


@dataclass(frozen=True)
class Backlog:
    received: int
    oldest_age_s: float


class ScanStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @unavailable_when_down("record the scan")
    async def insert(
        self, scan_id: str, scan: ScanInput, lease: timedelta, traceparent: str
    ) -> tuple[ScanRecord, Position | None] | None:
        """Records a new scan; None when its key (player, hunt, client_scan_id)
        exists already.
        Also returns where the player's last plausible applied scan was (for
        the speed check), read in the same round trip: None when there is none
        or its location was purged."""
        row = await self._pool.fetchrow(
            f"""WITH previous AS (
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
                SELECT * FROM inserted LEFT JOIN previous ON true""",
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
        row = await self._pool.fetchrow(
            f"SELECT {_COLUMNS} FROM scan.scans WHERE scan_id = $1", scan_id
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

    @unavailable_when_down("apply the scan")
    async def apply(self, answer: Answer, hunt_ends_at: datetime | None = None) -> ScanRecord:
        """Marks the scan applied with `answer`, unless it was applied already:
        either way, returns the row as it stands (the first answer wins).
        `hunt_ends_at`: the end of the scan's hunt when geo told it (when the
        location's retention starts), recorded in the same statement."""
        row = await self._pool.fetchrow(
            f"""UPDATE scan.scans SET status = 'applied', outcome = $2, points_awarded = $3,
                    total_points = $4, checkpoint_id = $5, checkpoint_name = $6, first_finder = $7,
                    applied_at = now(), last_error = '', hunt_ends_at = $8
                WHERE scan_id = $1 AND status = 'received'
                RETURNING {_COLUMNS}""",
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
            f"""UPDATE scan.scans SET next_attempt_at = now() + $2::interval, attempts = attempts + 1
                WHERE scan_id IN (
                    SELECT scan_id FROM scan.scans
                    WHERE status = 'received' AND next_attempt_at <= now()
                    ORDER BY next_attempt_at LIMIT $1
                    FOR UPDATE SKIP LOCKED)
                RETURNING {_COLUMNS}""",
            limit,
            lease,
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
        """A player's scans, newest first, strictly before `before_scan_id` if set."""
        rows = await self._pool.fetch(
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
            f"""WITH due AS ({PURGE_DUE})
                UPDATE scan.scans AS s
                SET lat = NULL, lon = NULL, accuracy_m = NULL, location_purged_at = now()
                FROM due WHERE s.scan_id = due.scan_id
                RETURNING s.player_id""",
            retention,
            limit,
        )
        return [r["player_id"] for r in rows]

    @unavailable_when_down("read the backlog")
    async def backlog(self) -> Backlog:
        row = await self._pool.fetchrow(
            """SELECT count(*) AS n, coalesce(extract(epoch FROM now() - min(received_at)), 0) AS age
               FROM scan.scans WHERE status = 'received'"""
        )
        return Backlog(received=row["n"], oldest_age_s=float(row["age"]))
