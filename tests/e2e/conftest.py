"""End-to-end fixtures: the whole stack as real processes, per test module;
the `faults` marker, and the fault suite's table at the end of the session."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from tests.support import faults
from tests.support.infra import RUN_DIR
from tests.support.stack import Stack
from tools.localinfra import throwaway_database


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "faults: the fault suite (tests/e2e/test_faults.py); `-m faults` selects it"
    )


def pytest_terminal_summary(terminalreporter) -> None:
    """The fault suite's table (also in .run/test/faults.md), when it ran."""
    if faults.TABLE:
        terminalreporter.section("fault suite")
        terminalreporter.write(faults.render(faults.TABLE))


@pytest.fixture(scope="module")
async def stack_dsn(pg_admin_dsn: str, pg_template: str) -> AsyncIterator[str]:
    name = f"thtest_e2e_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    async with throwaway_database(pg_admin_dsn, name, template=pg_template) as dsn:
        yield dsn


@pytest.fixture(scope="module")
async def stack(stack_dsn: str, request) -> AsyncIterator[Stack]:
    workdir = RUN_DIR / f"e2e-{os.getpid()}-{request.module.__name__.rsplit('.', 1)[-1]}"
    extra = getattr(request.module, "STACK_ENV", {})
    running = Stack(workdir, stack_dsn, **extra)
    try:
        await running.start()
        yield running
    finally:
        await running.stop()


@pytest.fixture(scope="module")
async def db(stack_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(stack_dsn, min_size=1, max_size=4)
    yield pool
    await pool.close()
