"""The migration runner: ordered, recorded, safe twice and from two processes at once."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from libs import pg

FILES = {
    "0001_create.sql": "CREATE TABLE things (id bigint PRIMARY KEY, name text NOT NULL);",
    "0002_index.sql": "CREATE INDEX things_name ON things (name);\nALTER TABLE things ADD COLUMN n int NOT NULL DEFAULT 0;",
}


@pytest.fixture
def migrations(tmp_path):
    for name, sql in FILES.items():
        (tmp_path / name).write_text(sql)
    return tmp_path


async def _state(dsn: str) -> tuple[list[int], list[str]]:
    connection = await asyncpg.connect(dsn)
    try:
        versions = [
            r["version"]
            for r in await connection.fetch(
                "SELECT version FROM mtest.schema_migrations ORDER BY 1"
            )
        ]
        columns = [
            r["column_name"]
            for r in await connection.fetch(
                "SELECT column_name FROM information_schema.columns WHERE table_schema='mtest' AND table_name='things' ORDER BY ordinal_position"
            )
        ]
        return versions, columns
    finally:
        await connection.close()


async def test_twice_in_a_row(pg_dsn, migrations):
    pool = await pg.create_pool(pg_dsn)
    try:
        assert await pg.migrate(pool, "mtest", migrations) == [1, 2]
        assert await pg.migrate(pool, "mtest", migrations) == []
    finally:
        await pool.close()
    assert await _state(pg_dsn) == ([1, 2], ["id", "name", "n"])


async def test_two_at_once(pg_dsn, migrations):
    pools = [await pg.create_pool(pg_dsn), await pg.create_pool(pg_dsn)]
    try:
        results = await asyncio.gather(*(pg.migrate(p, "mtest", migrations) for p in pools))
    finally:
        for pool in pools:
            await pool.close()
    assert sorted(results) == [[], [1, 2]]
    assert await _state(pg_dsn) == ([1, 2], ["id", "name", "n"])


async def test_an_applied_file_that_changed_is_refused(pg_dsn, migrations):
    pool = await pg.create_pool(pg_dsn)
    try:
        await pg.migrate(pool, "mtest", migrations)
        (migrations / "0001_create.sql").write_text("CREATE TABLE other (id int);")
        with pytest.raises(pg.MigrationError, match="changed after it was applied"):
            await pg.migrate(pool, "mtest", migrations)
    finally:
        await pool.close()


async def test_a_failing_file_leaves_nothing_half_applied(pg_dsn, migrations):
    (migrations / "0003_broken.sql").write_text(
        "CREATE TABLE half (id int);\nSELECT no_such_function();"
    )
    pool = await pg.create_pool(pg_dsn)
    try:
        with pytest.raises(asyncpg.PostgresError):
            await pg.migrate(pool, "mtest", migrations)
        assert await pool.fetchval("SELECT to_regclass('mtest.half')") is None
    finally:
        await pool.close()
    assert (await _state(pg_dsn))[0] == [1, 2]
