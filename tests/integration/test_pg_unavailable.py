"""A store call whose Postgres connection is cut answers Unavailable (the
caller's UNAVAILABLE with a retry hint), not an internal error; a bad
statement is still the error it is."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from libs import errors, pg
from tests.support.polling import eventually


class Store:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @pg.unavailable_when_down("read the answer")
    async def answer(self) -> int:
        return await self.pool.fetchval("SELECT 42")

    @pg.unavailable_when_down("wait for the answer")
    async def slow_answer(self) -> int:
        return await self.pool.fetchval("SELECT 42 FROM pg_sleep(30)")

    @pg.unavailable_when_down("read a missing table")
    async def broken(self) -> int:
        return await self.pool.fetchval("SELECT * FROM no_such_table")


async def test_a_cut_connection_is_unavailable_and_the_next_call_recovers(pg_dsn: str):
    pool = await pg.create_pool(pg_dsn, min_size=1, max_size=1)
    admin = await asyncpg.connect(pg_dsn)
    try:
        store = Store(pool)
        assert await store.answer() == 42
        # What a Postgres restart does to a pooled connection in use: the server
        # ends it under the statement. (An idle one may be replaced by the pool
        # before the next call, which then simply succeeds.)
        waiting = asyncio.ensure_future(store.slow_answer())

        async def running() -> int:
            assert not waiting.done(), waiting.result()  # it must still be running
            return await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(30)' "
                "AND state = 'active' AND pid <> pg_backend_pid()"
            )

        await eventually(
            running, timeout_s=10, interval_s=0.01, what="the slow statement to be running"
        )
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        with pytest.raises(errors.Unavailable) as raised:
            await asyncio.wait_for(waiting, 10)
        assert raised.value.reason == "STORE_UNAVAILABLE"
        assert "wait for the answer" in raised.value.message
        assert raised.value.retry_after_s > 0
        assert await store.answer() == 42  # the pool opened a new connection
    finally:
        await admin.close()
        await pool.close()


async def test_a_bad_statement_is_not_unavailable(pg_dsn: str):
    pool = await pg.create_pool(pg_dsn, min_size=1, max_size=1)
    try:
        with pytest.raises(asyncpg.UndefinedTableError):
            await Store(pool).broken()
    finally:
        await pool.close()
