"""The migrations Job of deploy/k8s: every service's pending migrations applied.

Each service with a `migrations/` folder (scan, score, geo) owns one schema,
named after it, in the Postgres its `<NAME>_PG_DSN` names. This applies the
pending files with `libs.pg.migrate`, the runner each service also calls at
start-up, under the same advisory lock, so the Job and replicas starting at
the same time apply each file once. Run in the service image, from the
ConfigMap `treasure-migrate`: `python /opt/migrate/migrate.py`.

Exit codes: 0 every schema migrated; 1 a Postgres that did not answer or a
migration that failed (named); 2 a missing setting (each named).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Mapping
from pathlib import Path

import services
from libs import pg
from libs.config import ConfigError, Env

#: How long to wait for each Postgres to answer.
WAIT_S = 120.0


def schemas() -> dict[str, Path]:
    """Service name (= its schema) -> its migrations folder."""
    root = Path(services.__file__).parent
    return {
        folder.name: folder / "migrations"
        for folder in sorted(root.iterdir())
        if (folder / "migrations").is_dir()
    }


def dsns(environ: Mapping[str, str]) -> dict[str, str]:
    """Schema -> the DSN its service reads; ConfigError names each missing one."""
    env = Env(environ)
    found = {name: env.str(f"{name.upper()}_PG_DSN") for name in schemas()}
    env.finish()
    return found


async def migrate(name: str, dsn: str, folder: Path) -> list[int]:
    """The pending migrations of schema `name` applied; their versions."""
    await pg.wait_for(dsn, WAIT_S)
    pool = await pg.create_pool(dsn, min_size=1, max_size=1)
    try:
        return await pg.migrate(pool, name, folder)
    finally:
        await pool.close()


async def main(environ: Mapping[str, str]) -> int:
    try:
        targets = dsns(environ)
    except ConfigError as exc:
        print(f"migrate: {exc}", file=sys.stderr)
        return 2
    for name, folder in schemas().items():
        try:
            applied = await migrate(name, targets[name], folder)
        except (pg.MigrationError, *pg.POSTGRES_ERRORS) as exc:
            print(f"migrate: {name}: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        print(f"migrate: {name}: applied {applied or 'nothing (up to date)'}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(os.environ)))
