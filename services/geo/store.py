"""The geo service's Postgres (schema `geo`): the catalog, tiles and the tile view.

One statement per operation wherever one will do. Catalog writes that must
keep every active checkpoint on its hunt's tile grid (`Grid.covers`) lock the
hunt's row first and check in the same transaction. Each statement has a
deadline and is counted in `geo_store_queries_total{query}`, so operators (and
tests) can see how often a cache tier falls through to Postgres.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import asyncpg

from libs import errors, worklog
from libs.metrics import Metrics
from libs.pg import unavailable_when_down
from libs.pgreads import ReadRoute
from services.geo.model import (
    Checkpoint,
    CheckpointInput,
    CheckpointSet,
    Grid,
    Hunt,
    HuntChanges,
    HuntNotFound,
    HuntStatus,
    NewHunt,
    Tile,
    TileRead,
    TileRefresh,
)

log = logging.getLogger(__name__)

TILE_VIEW = "hunt_tile_mv"

_HUNT_COLUMNS = """h.hunt_id, h.name, h.starts_at, h.ends_at, h.status, h.origin_lat,
    h.origin_lon, h.tile_size_m, h.grid_columns, h.grid_rows, h.created_at, h.updated_at,
    h.version"""
_CP_COLUMNS = """c.checkpoint_id, c.hunt_id, c.tag_id, c.name AS cp_name, c.lat, c.lon,
    c.radius_m, c.points, c.first_finder_bonus, c.active, c.version AS cp_version_of"""

_INSERT_HUNT = f"""
INSERT INTO geo.hunts AS h (hunt_id, name, starts_at, ends_at, status, origin_lat, origin_lon,
    tile_size_m, grid_columns, grid_rows, version, cp_version)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,
    nextval('geo.catalog_version'), 0)
RETURNING {_HUNT_COLUMNS}"""

_UPDATE_HUNT = f"""
UPDATE geo.hunts AS h SET
    name = COALESCE($2, h.name),
    starts_at = COALESCE($3, h.starts_at),
    ends_at = COALESCE($4, h.ends_at),
    status = COALESCE($5, h.status),
    origin_lat = COALESCE($6, h.origin_lat),
    origin_lon = COALESCE($7, h.origin_lon),
    tile_size_m = COALESCE($8, h.tile_size_m),
    grid_columns = COALESCE($9, h.grid_columns),
    grid_rows = COALESCE($10, h.grid_rows),
    version = nextval('geo.catalog_version'),
    updated_at = now()
WHERE h.hunt_id = $1
RETURNING {_HUNT_COLUMNS}"""

_GET_HUNT = f"SELECT {_HUNT_COLUMNS} FROM geo.hunts h WHERE h.hunt_id = $1"

# Serialises the catalog writes of one hunt while a grid rule is checked.
_LOCK_HUNT = f"SELECT {_HUNT_COLUMNS} FROM geo.hunts h WHERE h.hunt_id = $1 FOR UPDATE"

_ACTIVE_POINTS = """
SELECT checkpoint_id, lat, lon FROM geo.checkpoints WHERE hunt_id = $1 AND active
ORDER BY checkpoint_id"""

_LIST_HUNTS = f"""
SELECT {_HUNT_COLUMNS} FROM geo.hunts h WHERE h.hunt_id > $1 ORDER BY h.hunt_id LIMIT $2"""

# Bumps the hunt's checkpoint-set version (which also serialises writes to the
# checkpoints of one hunt), upserts, and says whether the row is new and which
# tag it had before.
_UPSERT_CHECKPOINT = f"""
WITH bump AS (
    UPDATE geo.hunts SET cp_version = nextval('geo.catalog_version')
    WHERE hunt_id = $1 RETURNING cp_version
), old AS (
    SELECT tag_id FROM geo.checkpoints WHERE hunt_id = $1 AND checkpoint_id = $2
)
INSERT INTO geo.checkpoints AS c (hunt_id, checkpoint_id, tag_id, name, lat, lon, radius_m,
    points, first_finder_bonus, active, version)
SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, true, bump.cp_version FROM bump
ON CONFLICT (hunt_id, checkpoint_id) DO UPDATE SET
    tag_id = EXCLUDED.tag_id, name = EXCLUDED.name, lat = EXCLUDED.lat, lon = EXCLUDED.lon,
    radius_m = EXCLUDED.radius_m, points = EXCLUDED.points,
    first_finder_bonus = EXCLUDED.first_finder_bonus, active = true,
    version = EXCLUDED.version, updated_at = now()
RETURNING {_CP_COLUMNS}, (c.xmax = 0) AS created, (SELECT tag_id FROM old) AS old_tag_id"""

_DEACTIVATE_CHECKPOINT = f"""
WITH bump AS (
    UPDATE geo.hunts SET cp_version = nextval('geo.catalog_version')
    WHERE hunt_id = $1
      AND EXISTS (SELECT 1 FROM geo.checkpoints WHERE hunt_id = $1 AND checkpoint_id = $2)
    RETURNING cp_version
)
UPDATE geo.checkpoints AS c SET active = false, version = bump.cp_version, updated_at = now()
FROM bump WHERE c.hunt_id = $1 AND c.checkpoint_id = $2
RETURNING {_CP_COLUMNS}"""

# One row per checkpoint of the page, or one row of NULLs for a hunt without
# any; no row at all for an unknown hunt.
_LIST_CHECKPOINTS = f"""
SELECT {_CP_COLUMNS}
FROM geo.hunts h
LEFT JOIN LATERAL (
    SELECT * FROM geo.checkpoints c
    WHERE c.hunt_id = h.hunt_id AND c.checkpoint_id > $2 AND (c.active OR $3)
    ORDER BY c.checkpoint_id LIMIT $4
) c ON true
WHERE h.hunt_id = $1
ORDER BY c.checkpoint_id"""

_TAG = f"""
SELECT {_CP_COLUMNS}, {_HUNT_COLUMNS}
FROM geo.checkpoints c JOIN geo.hunts h ON h.hunt_id = c.hunt_id
WHERE c.tag_id = $1"""

# The hunts being played or about to be ($1: now, $2: the lead), soonest
# ending first, and every checkpoint (active or not: a deactivated tag must
# answer as such) of those hunts, with each hunt's checkpoint-set version.
_PLAYED_HUNTS = f"""
SELECT {_HUNT_COLUMNS}, h.cp_version AS set_version FROM geo.hunts h
WHERE h.status = 'published' AND h.ends_at > $1 AND h.starts_at <= $1 + $2
ORDER BY h.ends_at, h.hunt_id LIMIT $3"""

_CHECKPOINTS_OF = f"""
SELECT {_CP_COLUMNS} FROM geo.checkpoints c WHERE c.hunt_id = ANY($1::text[])
ORDER BY c.hunt_id, c.checkpoint_id LIMIT $2"""

_ACTIVE_CHECKPOINTS = f"""
SELECT h.cp_version AS set_version, {_CP_COLUMNS}
FROM geo.hunts h
LEFT JOIN geo.checkpoints c ON c.hunt_id = h.hunt_id AND c.active
WHERE h.hunt_id = $1"""

# The stored version after the put: the new one, or the newer one already there.
_PUT_TILE = """
WITH up AS (
    INSERT INTO geo.hunt_tiles AS t (hunt_id, x, y, version, content_type, data)
    VALUES ($1, $2, $3, $4, $5, $6)
    ON CONFLICT (hunt_id, x, y) DO UPDATE SET
        version = EXCLUDED.version, content_type = EXCLUDED.content_type,
        data = EXCLUDED.data, updated_at = now()
    WHERE t.version < EXCLUDED.version
    RETURNING t.version
)
SELECT version FROM up
UNION ALL
SELECT version FROM geo.hunt_tiles WHERE hunt_id = $1 AND x = $2 AND y = $3
LIMIT 1"""

_STORED_TILE_VERSION = "SELECT version FROM geo.hunt_tiles WHERE hunt_id = $1 AND x = $2 AND y = $3"

_GET_TILE = f"""
SELECT r.refreshed_at, t.version, t.content_type, t.data
FROM geo.tile_refreshes r
LEFT JOIN geo.hunt_tile_mv t ON t.hunt_id = $1 AND t.x = $2 AND t.y = $3
WHERE r.view_name = '{TILE_VIEW}'"""


def _cells_query(columns: str) -> str:
    """`columns` of some cells of one hunt in the view ($2, $3: their x and y;
    NULL where the view has no tile), each row with the view's refresh time:
    one snapshot, so both are of the same refresh."""
    return f"""
SELECT r.refreshed_at, c.x, c.y, {columns}
FROM geo.tile_refreshes r
CROSS JOIN unnest($2::int[], $3::int[]) AS c(x, y)
LEFT JOIN geo.hunt_tile_mv t ON t.hunt_id = $1 AND t.x = c.x AND t.y = c.y
WHERE r.view_name = '{TILE_VIEW}'"""


# The carry-over of the tile cache after a refresh, and GetTiles's misses.
_TILE_VERSIONS = _cells_query("t.version")
_GET_TILES = _cells_query("t.version, t.content_type, t.data")

_LAST_REFRESH = f"SELECT refreshed_at FROM geo.tile_refreshes WHERE view_name = '{TILE_VIEW}'"

_TRY_LOCK = f"""
SELECT pg_try_advisory_lock(hashtextextended('treasure.geo.tile_refresh', 0)) AS locked,
       (SELECT refreshed_at FROM geo.tile_refreshes WHERE view_name = '{TILE_VIEW}') AS refreshed_at"""
_UNLOCK = "SELECT pg_advisory_unlock(hashtextextended('treasure.geo.tile_refresh', 0))"
_REFRESH = f"REFRESH MATERIALIZED VIEW CONCURRENTLY geo.{TILE_VIEW}"
# now() is the start of the refresh's transaction: a tile committed after it
# may or may not be in the view; one committed before it certainly is.
_RECORD_REFRESH = f"""
WITH work AS (
    UPDATE geo.tile_refreshes SET refreshed_at = now() WHERE view_name = '{TILE_VIEW}'
    RETURNING refreshed_at),
{worklog.counted("geo", "work", "'tile-refresh'", "$1")}
SELECT refreshed_at FROM work"""


def _tile_read(row: asyncpg.Record) -> TileRead:
    """A row of the view joined to its refresh (version NULL: no tile)."""
    tile = None
    if row["version"] is not None:
        tile = Tile(row["version"], row["content_type"], row["data"])
    return TileRead(tile, row["refreshed_at"])


def _hunt(row: asyncpg.Record) -> Hunt:
    return Hunt(
        hunt_id=row["hunt_id"],
        name=row["name"],
        starts_at=row["starts_at"],
        ends_at=row["ends_at"],
        status=HuntStatus(row["status"]),
        grid=Grid(
            origin_lat=row["origin_lat"],
            origin_lon=row["origin_lon"],
            tile_size_m=row["tile_size_m"],
            columns=row["grid_columns"],
            rows=row["grid_rows"],
        ),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        version=row["version"],
    )


def _checkpoint(row: asyncpg.Record) -> Checkpoint:
    return Checkpoint(
        checkpoint_id=row["checkpoint_id"],
        hunt_id=row["hunt_id"],
        tag_id=row["tag_id"],
        name=row["cp_name"],
        lat=row["lat"],
        lon=row["lon"],
        radius_m=row["radius_m"],
        points=row["points"],
        first_finder_bonus=row["first_finder_bonus"],
        active=row["active"],
        version=row["cp_version_of"],
    )


def _window_error(exc: asyncpg.CheckViolationError) -> errors.ServiceError:
    if exc.constraint_name == "hunts_window":
        return errors.InvalidArgument("hunt.ends_at", "must be after starts_at")
    return errors.InvalidArgument("hunt", f"breaks {exc.constraint_name}")


class GeoStore:
    """Postgres access of the geo service; returns `services.geo.model` values.
    Postgres being down or restarting is `errors.Unavailable` (libs.pg)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        metrics: Metrics,
        *,
        timeout_s: float,
        reads: ReadRoute | None = None,
    ) -> None:
        """`reads`: where tiles are read (libs.pgreads; default the primary, `pool`)."""
        self._pool = pool
        self._reads = reads or ReadRoute(pool)
        self._timeout = timeout_s
        counter = metrics.counter(
            "geo_store_queries_total", "Postgres statements run by geo, by query.", ("query",)
        )
        self._count = {
            name: counter.labels(name)
            for name in (
                "create_hunt", "update_hunt", "get_hunt", "list_hunts", "upsert_checkpoint",
                "deactivate_checkpoint", "list_checkpoints", "tag", "active_checkpoints",
                "played_catalog", "put_tile", "get_tile", "get_tiles", "tile_versions", "last_refresh", "refresh_tiles",
            )
        }  # fmt: skip

    # -- hunts --------------------------------------------------------------

    @unavailable_when_down("create the hunt")
    async def create_hunt(self, hunt: NewHunt) -> Hunt:
        self._count["create_hunt"].inc()
        g = hunt.grid
        try:
            row = await self._pool.fetchrow(
                _INSERT_HUNT,
                hunt.hunt_id, hunt.name, hunt.starts_at, hunt.ends_at, hunt.status.value,
                g.origin_lat, g.origin_lon, g.tile_size_m, g.columns, g.rows,
                timeout=self._timeout,
            )  # fmt: skip
        except asyncpg.UniqueViolationError:
            raise errors.AlreadyExists(f"hunt {hunt.hunt_id} already exists") from None
        except asyncpg.CheckViolationError as exc:
            raise _window_error(exc) from None
        return _hunt(row)

    @unavailable_when_down("update the hunt")
    async def update_hunt(self, hunt_id: str, changes: HuntChanges) -> Hunt:
        self._count["update_hunt"].inc()
        g = changes.grid
        try:
            async with self._pool.acquire() as connection, connection.transaction():
                if g is not None:
                    await self._require_on_grid(connection, hunt_id, g)
                row = await connection.fetchrow(
                    _UPDATE_HUNT,
                hunt_id, changes.name, changes.starts_at, changes.ends_at,
                changes.status.value if changes.status is not None else None,
                g.origin_lat if g else None, g.origin_lon if g else None,
                    g.tile_size_m if g else None, g.columns if g else None, g.rows if g else None,
                    timeout=self._timeout,
                )  # fmt: skip
        except asyncpg.CheckViolationError as exc:
            raise _window_error(exc) from None
        if row is None:
            raise HuntNotFound(hunt_id)
        return _hunt(row)

    async def _require_on_grid(
        self, connection: asyncpg.Connection, hunt_id: str, grid: Grid
    ) -> None:
        """Locks the hunt; refuses a grid that leaves an active checkpoint off it."""
        if await connection.fetchrow(_LOCK_HUNT, hunt_id, timeout=self._timeout) is None:
            raise HuntNotFound(hunt_id)
        for row in await connection.fetch(_ACTIVE_POINTS, hunt_id, timeout=self._timeout):
            if not grid.covers(row["lat"], row["lon"]):
                raise errors.InvalidArgument(
                    "hunt.grid", f"would leave checkpoint {row['checkpoint_id']} off the grid"
                )

    @unavailable_when_down("read the hunt")
    async def get_hunt(self, hunt_id: str) -> Hunt | None:
        self._count["get_hunt"].inc()
        row = await self._pool.fetchrow(_GET_HUNT, hunt_id, timeout=self._timeout)
        return _hunt(row) if row is not None else None

    @unavailable_when_down("list hunts")
    async def list_hunts(self, after: str, limit: int) -> list[Hunt]:
        self._count["list_hunts"].inc()
        rows = await self._pool.fetch(_LIST_HUNTS, after, limit, timeout=self._timeout)
        return [_hunt(r) for r in rows]

    # -- checkpoints --------------------------------------------------------

    @unavailable_when_down("write the checkpoint")
    async def upsert_checkpoint(self, cp: CheckpointInput) -> tuple[Checkpoint, bool, str | None]:
        """The stored checkpoint, whether it is new, and its previous tag id."""
        self._count["upsert_checkpoint"].inc()
        try:
            async with self._pool.acquire() as connection, connection.transaction():
                hunt = await connection.fetchrow(_LOCK_HUNT, cp.hunt_id, timeout=self._timeout)
                if hunt is None:
                    raise HuntNotFound(cp.hunt_id)
                grid = _hunt(hunt).grid
                if not grid.covers(cp.lat, cp.lon):
                    x, y = grid.tile_of(cp.lat, cp.lon)
                    raise errors.InvalidArgument(
                        "checkpoint.location",
                        f"is off the tile grid of hunt {cp.hunt_id} (tile ({x}, {y}) of a "
                        f"{grid.columns} x {grid.rows} grid)",
                    )
                row = await connection.fetchrow(
                    _UPSERT_CHECKPOINT,
                    cp.hunt_id, cp.checkpoint_id, cp.tag_id, cp.name, cp.lat, cp.lon, cp.radius_m,
                    cp.points, cp.first_finder_bonus,
                    timeout=self._timeout,
                )  # fmt: skip
        except asyncpg.UniqueViolationError:
            raise errors.AlreadyExists(
                f"tag {cp.tag_id} belongs to another checkpoint", reason="TAG_TAKEN"
            ) from None
        if row is None:
            raise HuntNotFound(cp.hunt_id)
        return _checkpoint(row), row["created"], row["old_tag_id"]

    @unavailable_when_down("deactivate the checkpoint")
    async def deactivate_checkpoint(self, hunt_id: str, checkpoint_id: str) -> Checkpoint:
        self._count["deactivate_checkpoint"].inc()
        row = await self._pool.fetchrow(
            _DEACTIVATE_CHECKPOINT, hunt_id, checkpoint_id, timeout=self._timeout
        )
        if row is None:
            raise errors.NotFound(f"checkpoint {checkpoint_id} of hunt {hunt_id} not found")
        return _checkpoint(row)

    @unavailable_when_down("list checkpoints")
    async def list_checkpoints(
        self, hunt_id: str, *, include_inactive: bool, after: str, limit: int
    ) -> list[Checkpoint]:
        self._count["list_checkpoints"].inc()
        rows = await self._pool.fetch(
            _LIST_CHECKPOINTS, hunt_id, after, include_inactive, limit, timeout=self._timeout
        )
        if not rows:
            raise HuntNotFound(hunt_id)
        return [_checkpoint(r) for r in rows if r["checkpoint_id"] is not None]

    @unavailable_when_down("resolve the tag")
    async def tag(self, tag_id: str) -> tuple[Checkpoint | None, Hunt | None]:
        """The checkpoint of a tag (active or not) and its hunt, in one read."""
        self._count["tag"].inc()
        row = await self._pool.fetchrow(_TAG, tag_id, timeout=self._timeout)
        if row is None:
            return None, None
        return _checkpoint(row), _hunt(row)

    @unavailable_when_down("read the played hunts")
    async def played_catalog(
        self, now: datetime, lead: timedelta, limit: int
    ) -> list[tuple[Hunt, CheckpointSet, list[Checkpoint]]]:
        """The published hunts that run now or start within `lead` (at most
        `limit`, and at most `limit` checkpoints in all): each hunt, its
        active checkpoints as a set, and all its checkpoints (two reads)."""
        self._count["played_catalog"].inc()
        async with self._pool.acquire() as connection:
            hunts = await connection.fetch(_PLAYED_HUNTS, now, lead, limit, timeout=self._timeout)
            rows = await connection.fetch(
                _CHECKPOINTS_OF, [h["hunt_id"] for h in hunts], limit, timeout=self._timeout
            )
        by_hunt: dict[str, list[Checkpoint]] = {h["hunt_id"]: [] for h in hunts}
        for row in rows:
            by_hunt[row["hunt_id"]].append(_checkpoint(row))
        return [
            (
                _hunt(h),
                CheckpointSet(
                    version=h["set_version"],
                    checkpoints=tuple(cp for cp in by_hunt[h["hunt_id"]] if cp.active),
                ),
                by_hunt[h["hunt_id"]],
            )
            for h in hunts
        ]

    @unavailable_when_down("read the hunt's checkpoints")
    async def active_checkpoints(self, hunt_id: str) -> CheckpointSet | None:
        """The active checkpoints of a hunt and their set's version; None: no such hunt."""
        self._count["active_checkpoints"].inc()
        rows = await self._pool.fetch(_ACTIVE_CHECKPOINTS, hunt_id, timeout=self._timeout)
        if not rows:
            return None
        return CheckpointSet(
            version=rows[0]["set_version"],
            checkpoints=tuple(_checkpoint(r) for r in rows if r["checkpoint_id"] is not None),
        )

    # -- tiles --------------------------------------------------------------

    @unavailable_when_down("write the tile")
    async def put_tile(
        self, hunt_id: str, x: int, y: int, data: bytes, version: int, content_type: str
    ) -> int:
        """Stores a tile unless a newer version is stored; the version stored after."""
        self._count["put_tile"].inc()
        try:
            stored = await self._pool.fetchval(
                _PUT_TILE, hunt_id, x, y, version, content_type, data, timeout=self._timeout
            )
        except asyncpg.ForeignKeyViolationError:
            raise HuntNotFound(hunt_id) from None
        if stored is None:  # a concurrent first put won the insert; read what it stored
            stored = await self._pool.fetchval(
                _STORED_TILE_VERSION, hunt_id, x, y, timeout=self._timeout
            )
        return stored

    @unavailable_when_down("read the tile")
    async def get_tile(self, hunt_id: str, x: int, y: int, seen_refresh_s: float = 0.0) -> TileRead:
        """The tile as the view shows it, with the view's refresh time. On the
        read replica when it is usable and its view is at least as new as the
        newest refresh this process has seen (`seen_refresh_s`, Unix seconds);
        else on the primary, so a tile is never older than one already served."""
        self._count["get_tile"].inc()
        row = await self._reads.fetchrow(
            _GET_TILE,
            hunt_id,
            x,
            y,
            timeout=self._timeout,
            fresh=lambda r: r is not None and r["refreshed_at"].timestamp() >= seen_refresh_s,
        )
        assert row is not None  # one row: the view's refresh, joined to the tile if any
        return _tile_read(row)

    @unavailable_when_down("read the tiles")
    async def get_tiles(
        self, hunt_id: str, cells: list[tuple[int, int]], seen_refresh_s: float = 0.0
    ) -> dict[tuple[int, int], TileRead]:
        """Several cells of one hunt as the view shows them, in one query; from
        the read replica on the same terms as get_tile. `cells` not empty."""
        self._count["get_tiles"].inc()
        rows = await self._cells(_GET_TILES, hunt_id, cells, seen_refresh_s)
        return {(r["x"], r["y"]): _tile_read(r) for r in rows}

    @unavailable_when_down("read the tile versions")
    async def tile_versions(
        self, hunt_id: str, cells: list[tuple[int, int]], seen_refresh_s: float = 0.0
    ) -> tuple[dict[tuple[int, int], int | None], datetime]:
        """The view's version of each cell (None: not in the view) and the
        view's refresh time, in one query; from the read replica on the same
        terms as get_tile. `cells` not empty."""
        self._count["tile_versions"].inc()
        rows = await self._cells(_TILE_VERSIONS, hunt_id, cells, seen_refresh_s)
        return {(r["x"], r["y"]): r["version"] for r in rows}, rows[0]["refreshed_at"]

    async def _cells(
        self, query: str, hunt_id: str, cells: list[tuple[int, int]], seen_refresh_s: float
    ) -> list[asyncpg.Record]:
        """A `_cells_query` for these cells (one row each), from the standby
        when its view is at least as new as `seen_refresh_s`."""
        return await self._reads.fetch(
            query,
            hunt_id,
            [x for x, _ in cells],
            [y for _, y in cells],
            timeout=self._timeout,
            fresh=lambda rs: bool(rs) and rs[0]["refreshed_at"].timestamp() >= seen_refresh_s,
        )

    @unavailable_when_down("read the tile view age")
    async def last_refresh(self) -> datetime:
        self._count["last_refresh"].inc()
        return await self._pool.fetchval(_LAST_REFRESH, timeout=self._timeout)

    @unavailable_when_down("refresh the tile view")
    async def refresh_tiles(self, timeout_s: float) -> TileRefresh:
        """REFRESH ... CONCURRENTLY under a session advisory lock held on one
        connection, so replicas never refresh at once; refreshed=False when
        another holds it. The lock is released in a finally (pools here do not
        reset sessions); a connection whose unlock fails is closed instead."""
        self._count["refresh_tiles"].inc()
        async with self._pool.acquire() as connection:
            row = await connection.fetchrow(_TRY_LOCK, timeout=self._timeout)
            if not row["locked"]:
                return TileRefresh(False, row["refreshed_at"])
            try:
                async with connection.transaction():
                    await connection.execute(_REFRESH, timeout=timeout_s)
                    refreshed_at = await connection.fetchval(
                        _RECORD_REFRESH, worklog.WORKER, timeout=self._timeout
                    )
            finally:
                try:
                    await connection.execute(_UNLOCK, timeout=self._timeout)
                except BaseException:
                    # The session (and with it the lock) must not go back to the pool.
                    connection.terminate()
                    raise
        return TileRefresh(True, refreshed_at)
