"""asyncpg pools and the migration runner.

Pools skip asyncpg's per-release reset query (`RESET ALL`, `UNLISTEN *`,
advisory unlock...): it costs about 30% throughput here and our code leaves
no session state behind. Open transactions are still rolled back on release.
A caller that takes a session-level advisory lock must release it itself.

Failures: `unavailable_when_down` turns the failures that mean "Postgres is
down, restarting or overloaded" (connection errors, admin shutdown,
serialization and deadlock aborts) into `libs.errors.Unavailable`, so a
caller answers UNAVAILABLE with a retry hint instead of INTERNAL.

Migrations: each service owns one schema and a folder of ordered SQL files
named `NNNN_description.sql`. `migrate()` applies the ones not yet recorded
in `<schema>.schema_migrations`, each in its own transaction, under an
advisory lock so two processes starting at once apply each file once. An
applied file whose content changed is an error, not silently skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import ParamSpec, TypeVar

import asyncpg

from libs import errors

log = logging.getLogger(__name__)

_SCHEMA = re.compile(r"[a-z][a-z0-9_]{0,62}")
_MIGRATION = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")


#: What a statement can raise when the server or the connection is in trouble.
POSTGRES_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)

#: SQLSTATEs that mean "try again": serialization failure, deadlock, lock not
#: available, admin/crash shutdown, cannot connect now, too many connections.
_TRANSIENT_STATES = {"40001", "40P01", "55P03", "57P01", "57P02", "57P03", "53300"}


def is_transient(exc: BaseException) -> bool:
    """Whether `exc` means Postgres may answer if asked again shortly."""
    if isinstance(exc, (OSError, TimeoutError, asyncpg.PostgresConnectionError)):
        return True
    if isinstance(exc, asyncpg.InterfaceError) and "connection" in str(exc).lower():
        return True
    if isinstance(exc, asyncpg.InternalClientError) and "another operation" in str(exc):
        # A pooled connection the server is terminating (a Postgres restart
        # sends idle connections a FATAL error, then closes them): asyncpg
        # refuses the next statement until the close arrives.
        return True
    return getattr(exc, "sqlstate", None) in _TRANSIENT_STATES


_P = ParamSpec("_P")
_R = TypeVar("_R")


#: sqlstate -> the service error it means, for errors a service raises on
#: purpose in its own SQL (e.g. a PL/pgSQL `RAISE ... USING ERRCODE`).
ErrorStates = Mapping[str, Callable[[BaseException], errors.ServiceError]]


@contextlib.contextmanager
def mapped_errors(what: str, states: ErrorStates | None = None) -> Iterator[None]:
    """The one Postgres error mapper: an error whose sqlstate is in `states`
    becomes that service error; a transient failure becomes `errors.Unavailable`
    ("`what`: postgres is unavailable", retry hint); others pass unchanged."""
    try:
        yield
    except POSTGRES_ERRORS as exc:
        state = getattr(exc, "sqlstate", None)
        if states is not None and isinstance(state, str) and state in states:
            raise states[state](exc) from exc
        if not is_transient(exc):
            raise
        log.warning("postgres unavailable: %s: %s", what, exc)
        raise errors.Unavailable(
            f"{what}: postgres is unavailable",
            retry_after_s=0.5,
            reason="STORE_UNAVAILABLE",
        ) from exc


def unavailable_when_down(
    what: str, states: ErrorStates | None = None
) -> Callable[[Callable[_P, Awaitable[_R]]], Callable[_P, Awaitable[_R]]]:
    """Decorates a store method with `mapped_errors(what, states)`."""

    def decorate(method: Callable[_P, Awaitable[_R]]) -> Callable[_P, Awaitable[_R]]:
        @functools.wraps(method)
        async def guarded(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            with mapped_errors(what, states):
                return await method(*args, **kwargs)

        return guarded

    return decorate


async def _keep_session(_connection: asyncpg.Connection) -> None:
    """Replaces the reset query on release (see the module docstring)."""


async def create_pool(
    dsn: str, *, min_size: int = 2, max_size: int = 10, command_timeout: float = 10.0
) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        command_timeout=command_timeout,
        reset=_keep_session,
        max_inactive_connection_lifetime=300.0,
    )


#: A statement of a service's hot path, with arguments for `prime`: it runs in
#: a transaction that is rolled back, so any arguments the statement accepts
#: will do (made-up ids: it may write, nothing of it stays).
Primer = tuple[str, tuple[object, ...]]
#: An id for a primer's arguments: no id of ours looks like this (libs.validate),
#: so a primed write can meet no real row.
PRIME_ID = "~prime"
#: A time for a primer's arguments.
PRIME_TIME = datetime(2000, 1, 1, tzinfo=UTC)


async def open_connections(pool: asyncpg.Pool, count: int, primers: Sequence[Primer] = ()) -> str:
    """Opens `count` of the pool's connections at once (it opens only
    `min_size` at start, the rest in the first busy moments, each connection
    a few ms of handshake a caller waits for), and primes each with
    `primers` (`prime`). They stay open while used and close after
    max_inactive_connection_lifetime."""
    held = await asyncio.gather(*(pool.acquire() for _ in range(count)))
    try:
        primed = [await prime(connection, primers) for connection in held]
    finally:
        for connection in held:
            await pool.release(connection)
    return f"{pool.get_size()} connections open, {sum(primed)} statements primed"


async def prime(connection: asyncpg.Connection, primers: Sequence[Primer]) -> int:
    """Runs each statement once on `connection`, each in a transaction that is
    rolled back. A new backend's first run of a statement parses and plans it
    and loads what it touches into its caches (catalogs, a PL/pgSQL function's
    compiled body), and asyncpg prepares it: in traces of the first scans after
    a restart, 3-5 ms against 1 ms warm (9 ms for the outbox's first DELETE).
    Primed, the first calls on the connection run as warm ones do. A statement
    that fails is logged and skipped. Returns how many ran."""
    ran = 0
    for sql, args in primers:
        transaction = connection.transaction()
        await transaction.start()
        try:
            await connection.fetch(sql, *args)
            ran += 1
        except (asyncpg.PostgresError, asyncpg.DataError) as exc:  # the statement, or its arguments
            log.warning("priming a statement failed (%s): %s", exc, sql.split("\n", 1)[0])
        finally:
            await transaction.rollback()
    return ran


async def lazy_pool(dsn: str, *, max_size: int = 5, command_timeout: float = 5.0) -> asyncpg.Pool:
    """A pool that opens its connections when first used (none at start), for
    a server the service can do without for a while (the read replica)."""
    return await asyncpg.create_pool(
        dsn,
        min_size=0,
        max_size=max_size,
        command_timeout=command_timeout,
        reset=_keep_session,
        max_inactive_connection_lifetime=300.0,
        timeout=2.0,
    )


async def wait_for(dsn: str, timeout_s: float) -> None:
    """Returns once Postgres at `dsn` answers; raises the last error after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    delay = 0.1
    while True:
        try:
            connection = await asyncpg.connect(dsn, timeout=min(5.0, max(0.5, timeout_s)))
            await connection.close()
            return
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("waiting for postgres: %s", exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


class MigrationError(Exception):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directory: Path) -> list[Migration]:
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION.fullmatch(path.name)
        if match is None:
            raise MigrationError(f"{path}: migration files are named NNNN_description.sql")
        migrations.append(Migration(int(match.group(1)), match.group(2), path.read_text()))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"{directory}: two migrations share a version number")
    return migrations


async def migrate(pool: asyncpg.Pool, schema: str, directory: Path) -> list[int]:
    """Applies the pending migrations of `schema`; returns the versions applied."""
    if _SCHEMA.fullmatch(schema) is None:
        raise MigrationError(f"bad schema name {schema!r}")
    migrations = load_migrations(directory)
    applied_now: list[int] = []
    async with pool.acquire() as connection:
        lock_key = await connection.fetchval(
            "SELECT hashtextextended($1, 0)", f"treasure.migrate.{schema}"
        )
        await connection.execute("SELECT pg_advisory_lock($1)", lock_key)
        try:
            await connection.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
            await connection.execute(
                f"""CREATE TABLE IF NOT EXISTS {schema}.schema_migrations (
                        version integer PRIMARY KEY,
                        name text NOT NULL,
                        checksum text NOT NULL,
                        applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            rows = await connection.fetch(
                f"SELECT version, checksum FROM {schema}.schema_migrations"
            )
            done = {r["version"]: r["checksum"] for r in rows}
            for migration in migrations:
                if migration.version in done:
                    if done[migration.version] != migration.checksum:
                        raise MigrationError(
                            f"{schema} migration {migration.version:04d}_{migration.name} was changed after it was applied"
                        )
                    continue
                async with connection.transaction():
                    await connection.execute(f"SET LOCAL search_path TO {schema}, public")
                    await connection.execute(migration.sql)
                    await connection.execute(
                        f"INSERT INTO {schema}.schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                        migration.version,
                        migration.name,
                        migration.checksum,
                    )
                applied_now.append(migration.version)
                log.info(
                    "applied migration", extra={"schema": schema, "version": migration.version}
                )
        finally:
            await connection.execute("SELECT pg_advisory_unlock($1)", lock_key)
    return applied_now
