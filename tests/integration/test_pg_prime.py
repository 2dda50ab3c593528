"""Priming a service's connections before it serves (libs.pg.prime), on real
Postgres: each service's primers run in full and leave nothing behind, they
are the very statements its hot path then runs (nothing new is prepared on
the primed connection), and a primer that fails is skipped."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from libs import pg
from services.scan import store as scan_store
from services.scan.model import Answer, Outcome, ScanInput, Status, new_scan_id
from services.score import store as score_store

NOW = datetime.now(UTC).replace(microsecond=0)
TABLES = ("scan.scans", "score.unlocks", "score.player_scores", "score.outbox",
          "score.background_work")  # fmt: skip


async def _counts(connection: asyncpg.Connection) -> dict[str, int]:
    return {t: await connection.fetchval(f"SELECT count(*) FROM {t}") for t in TABLES}


async def _prepared(connection: asyncpg.Connection) -> set[str]:
    rows = await connection.fetch("SELECT statement FROM pg_prepared_statements")
    return {r["statement"] for r in rows}


@pytest.mark.parametrize(
    "primers", [scan_store.PRIMERS, score_store.PRIMERS], ids=["scan", "score"]
)
async def test_every_primer_runs_and_leaves_nothing(pg_dsn, primers):
    connection = await asyncpg.connect(pg_dsn)
    try:
        before = await _counts(connection)
        assert await pg.prime(connection, primers) == len(primers)
        assert await _counts(connection) == before
        assert not connection.is_in_transaction()
        assert {sql for sql, _ in primers} <= await _prepared(connection)
    finally:
        await connection.close()


async def test_a_failing_primer_is_skipped(pg_dsn):
    connection = await asyncpg.connect(pg_dsn)
    try:
        primers = [
            ("SELECT * FROM nowhere.nothing", ()),  # refused by Postgres
            ("SELECT $1::int + 1", ("one",)),  # arguments asyncpg cannot encode
            ("SELECT $1::int + 1", (1,)),
        ]
        assert await pg.prime(connection, primers) == 1
        assert not connection.is_in_transaction()
        assert await connection.fetchval("SELECT 41 + 1") == 42
    finally:
        await connection.close()


async def test_open_connections_primes_each_one(pg_dsn):
    pool = await pg.create_pool(pg_dsn, min_size=1, max_size=3)
    try:
        said = await pg.open_connections(pool, 3, [("SELECT $1::int + 2", (1,))])
        assert said == "3 connections open, 3 statements primed"
        held = [await pool.acquire() for _ in range(3)]
        for connection in held:
            assert "SELECT $1::int + 2" in await _prepared(connection)
        for connection in held:
            await pool.release(connection)
    finally:
        await pool.close()


async def _one_connection(pg_dsn: str, primers) -> tuple[asyncpg.Pool, set[str]]:
    pool = await pg.create_pool(pg_dsn, min_size=1, max_size=1)
    await pg.open_connections(pool, 1, primers)
    async with pool.acquire() as connection:
        return pool, await _prepared(connection)


async def test_scan_primers_are_what_submitscan_runs(pg_dsn):
    """One by one and in batches: inserts and applies prepare nothing new."""
    pool, primed = await _one_connection(pg_dsn, scan_store.PRIMERS)
    try:
        for batch_size in (1, 8):
            store = scan_store.ScanStore(pool, batch_size=batch_size)
            scans = [ScanInput(f"p{i}", "h1", "t1", 38.7, -9.1, 5.0, NOW, f"c{batch_size}-{i}")
                     for i in range(5)]  # fmt: skip
            inserted = await asyncio.gather(
                *(store.insert(new_scan_id(), s, timedelta(seconds=15), "") for s in scans)
            )
            records = [found[0] for found in inserted if found is not None]
            assert len(records) == 5
            applied = await asyncio.gather(*(store.apply(Answer(
                scan_id=r.scan_id, status=Status.APPLIED, outcome=Outcome.UNLOCKED,
                checkpoint_id="cp1", checkpoint_name="One", points_awarded=10, total_points=10,
            )) for r in records))  # fmt: skip
            assert {a.answer.status for a in applied} == {Status.APPLIED}
            if batch_size > 1:
                assert store.batching()["insert"][0] < 5  # some went together
        async with pool.acquire() as connection:
            assert await _prepared(connection) == primed
    finally:
        await pool.close()


async def test_score_primers_are_what_unlock_runs(pg_dsn):
    pool, primed = await _one_connection(pg_dsn, score_store.PRIMERS)
    try:
        for batch_size in (1, 8):
            store = score_store.ScoreStore(pool, batch_size=batch_size)
            outcomes = await asyncio.gather(*(store.unlock(
                scan_id=f"s{batch_size}-{i}", hunt_id="h1", player_id=f"p{i}",
                checkpoint_id=f"cp{batch_size}", points=10, first_finder_bonus=5, at=NOW,
                traceparent="", tracestate="",
            ) for i in range(5)))  # fmt: skip
            assert all(o.points_awarded >= 10 for o in outcomes)
            if batch_size > 1:
                assert store.batching()[0] < 5
        async with store.claim_outbox(100) as claim:
            assert len(claim.rows) == 10
            await claim.acknowledge()
        async with pool.acquire() as connection:
            assert await _prepared(connection) == primed
    finally:
        await pool.close()
