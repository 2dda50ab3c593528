"""What `<schema>.background_work` (libs/worklog.py) says a task did."""

from __future__ import annotations

from typing import Any


async def work_done(db: Any, schema: str, task: str) -> tuple[int, int]:
    """(runs, units) of `task` over every worker; `db`: an asyncpg pool or connection."""
    row = await db.fetchrow(
        f"SELECT coalesce(sum(runs), 0)::bigint AS runs, coalesce(sum(units), 0)::bigint AS units"
        f" FROM {schema}.background_work WHERE task = $1",
        task,
    )
    return int(row["runs"]), int(row["units"])


async def units_by_worker(db: Any, schema: str, task: str) -> dict[str, int]:
    """Units of `task` per worker (host:pid) that did any."""
    rows = await db.fetch(
        f"SELECT worker, units FROM {schema}.background_work WHERE task = $1 AND units > 0", task
    )
    return {row["worker"]: int(row["units"]) for row in rows}
