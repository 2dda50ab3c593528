"""Local Redis and Postgres servers for the local stack (`make up`), the
tests and the benchmarks: development infrastructure, never shipped plumbing.

Redis servers start from a service's pinned config file; only the port, the
working directory and (for a cluster) the cluster settings are overridden.
Postgres is found or made: an explicit DSN; else the server on
127.0.0.1:5432; else a private cluster under a run folder, created with
`initdb` as the `postgres` user (initdb refuses to run as root). Databases on
it are made and dropped here too (`create_database`, `drop_database`,
`throwaway_database`), and nowhere else.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import redis


class InfraError(Exception):
    """A local server cannot be had; the message says what to install or do."""


def free_port() -> int:
    """A loopback port nobody uses now."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports nobody uses now. Held open together while
    they are chosen: one at a time, the kernel may hand out the same port twice."""
    with contextlib.ExitStack() as held:
        ports = []
        for _ in range(count):
            sock = held.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
        return ports


def find_binary(name: str, hint: str) -> str:
    found = shutil.which(name)
    if found is None:
        for candidate in sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True):
            return candidate
        raise InfraError(f"{name} not found: {hint}")
    return found


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def _redis_pid(port: int) -> int | None:
    """The process id of the Redis answering on `port`; None if none answers."""
    try:
        with redis.Redis(host="127.0.0.1", port=port, socket_timeout=1) as client:
            return int(client.info("server")["process_id"])
    except (redis.RedisError, OSError, KeyError, ValueError):
        return None


def stop_pid(pid: int, timeout_s: float = 10.0) -> None:
    """SIGTERM `pid`, then SIGKILL after `timeout_s`; quiet if already gone."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        try:  # reap it if it is our child
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:
            pass
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


@dataclass
class RedisServer:
    """One redis-server process started from `config_file`."""

    config_file: Path
    port: int
    workdir: Path
    extra_args: tuple[str, ...] = ()
    detach: bool = False
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        binary = find_binary("redis-server", "install it with `apt-get install redis-server`")
        return [
            binary, str(self.config_file.resolve()),
            "--port", str(self.port), "--dir", str(self.workdir.resolve()),
            "--logfile", str((self.workdir / "redis.log").resolve()),
            "--bind", "127.0.0.1", *self.extra_args,
        ]  # fmt: skip

    @classmethod
    def on_free_port(
        cls, config_file: Path, workdir: Path, attempts: int = 3, detach: bool = False
    ) -> RedisServer:
        """Started on a free port. A port is only free when it is chosen: one
        another process takes before Redis binds it is tried again, anew."""
        for attempt in range(1, attempts + 1):
            try:
                return cls(config_file, free_port(), workdir, detach=detach).start()
            except InfraError as exc:
                if attempt == attempts or "Address already in use" not in str(exc):
                    raise
        raise AssertionError("unreachable")

    def start(self, timeout_s: float = 10.0) -> RedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            self.command(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=self.detach,
        )
        deadline = time.monotonic() + timeout_s
        # Ours must answer: another server may hold the port (then ours exits).
        while not (_port_open(self.port) and _redis_pid(self.port) == self.process.pid):
            if self.process.poll() is not None:
                log = (self.workdir / "redis.log").read_text(errors="replace")[-2000:]
                raise InfraError(f"redis-server on {self.port} exited: {log}")
            if time.monotonic() > deadline:
                raise InfraError(f"redis-server on {self.port} did not start in {timeout_s:g}s")
            time.sleep(0.02)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> None:
        if self.process is not None:
            stop_pid(self.process.pid)
            self.process = None

    def restart(self, timeout_s: float = 10.0) -> RedisServer:
        """Stops the server and starts it again on the same port, from the same
        config (no persistence: it comes back empty)."""
        self.stop()
        return self.start(timeout_s)


@dataclass
class RedisCluster:
    """`masters` redis-server processes in cluster mode, joined into one cluster."""

    config_file: Path
    workdir: Path
    masters: int = 3
    ports: list[int] = field(default_factory=list)
    detach: bool = False
    nodes: list[RedisServer] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def start(self, timeout_s: float = 20.0) -> RedisCluster:
        """Starts the nodes and makes the cluster. On free ports, a failure (a
        port taken meanwhile by someone else) is tried once more on new ports."""
        for attempt in (1, 2):
            try:
                return self._start(timeout_s)
            except (InfraError, subprocess.SubprocessError):
                self.stop()  # no node left behind when the cluster cannot be made
                if self.ports or attempt == 2:
                    raise
            except BaseException:
                self.stop()
                raise
        raise AssertionError("unreachable")

    def _start(self, timeout_s: float) -> RedisCluster:
        # Free ports for every master and its bus, chosen together (one at a
        # time, a bus port could equal a later master's).
        chosen = free_ports(2 * self.masters)
        ports = self.ports or chosen[: self.masters]
        buses = iter(chosen[self.masters :])
        for port in ports:
            node_dir = self.workdir / str(port)
            # The bus port is chosen free too, not port + 10000 (which may be taken).
            bus = port + 10000 if self.ports and port + 10000 < 65536 else next(buses)
            node = RedisServer(
                self.config_file, port, node_dir,
                extra_args=("--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf",
                            "--cluster-node-timeout", "2000", "--cluster-port", str(bus)),
                detach=self.detach,
            )  # fmt: skip
            self.nodes.append(node.start())
        cli = find_binary("redis-cli", "install it with `apt-get install redis-tools`")
        created = subprocess.run(
            [cli, "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports], "--cluster-yes"],
            check=False, capture_output=True, text=True, timeout=timeout_s,
        )  # fmt: skip
        if created.returncode != 0:
            raise InfraError(f"redis-cli --cluster create {ports} failed: {created.stdout[-1000:]}")
        return self.wait_ok(timeout_s)

    def wait_ok(self, timeout_s: float = 20.0) -> RedisCluster:
        """Returns once every master says the cluster is whole (cluster_state:ok):
        after a start, or after its nodes were stopped and started again."""
        cli = find_binary("redis-cli", "install it with `apt-get install redis-tools`")
        deadline = time.monotonic() + timeout_s
        waiting = [node.port for node in self.nodes]
        while waiting:
            out = subprocess.run(
                [cli, "-p", str(waiting[0]), "cluster", "info"],
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout
            if "cluster_state:ok" in out:
                waiting.pop(0)
                continue
            if time.monotonic() > deadline:
                ports = [node.port for node in self.nodes]
                raise InfraError(f"redis cluster on {ports} did not become ok: {out}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        self.nodes.clear()


DEFAULT_PG_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def pg_answers(dsn: str) -> bool:
    import asyncio

    async def probe() -> bool:
        try:
            connection = await asyncpg.connect(dsn, timeout=2)
        except (TimeoutError, OSError, asyncpg.PostgresError):
            return False
        await connection.close()
        return True

    return asyncio.run(probe())


@dataclass
class PrivatePostgres:
    """A Postgres cluster of our own under `datadir`, run as the `postgres` user."""

    datadir: Path
    port: int

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, args: list[str]) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *args]
        return args

    def start(self) -> PrivatePostgres:
        pg_ctl = find_binary("pg_ctl", _PG_HINT)
        self.datadir.parent.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.datadir.parent, "postgres")
        if not (self.datadir / "PG_VERSION").exists():
            self._create()
        # A standby needs max_connections at least its primary's: the same for both.
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.datadir} -c fsync=off"
            " -c max_connections=200"
        )
        subprocess.run(
            self._as_postgres([pg_ctl, "-D", str(self.datadir), "-o", options, "-l", str(self.datadir / "log"), "-w", "start"]),
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        return self

    def _create(self) -> None:
        initdb = find_binary("initdb", _PG_HINT)
        subprocess.run(
            self._as_postgres([initdb, "-D", str(self.datadir), "-A", "trust", "-U", "postgres", "--no-sync"]),
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip

    def stop(self) -> None:
        pg_ctl = find_binary("pg_ctl", "")
        subprocess.run(
            self._as_postgres([pg_ctl, "-D", str(self.datadir), "-m", "fast", "-w", "stop"]),
            check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def restart(self) -> PrivatePostgres:
        """A fast shutdown (open connections are cut) and a start on the same port."""
        self.stop()
        return self.start()


@dataclass
class PrivateStandby(PrivatePostgres):
    """A streaming standby (read replica) of `primary`, a private cluster:
    made by `pg_basebackup -R` (which writes the connection to the primary
    and standby.signal) the first time it starts; read-only, replaying the
    primary's WAL as it comes."""

    primary: PrivatePostgres | None = None

    def _create(self) -> None:
        if self.primary is None:
            raise InfraError("a standby needs its primary")
        basebackup = find_binary("pg_basebackup", _PG_HINT)
        subprocess.run(
            self._as_postgres([basebackup, "-h", "127.0.0.1", "-p", str(self.primary.port), "-U", "postgres",
                               "-D", str(self.datadir), "-R", "-X", "stream", "--no-sync", "--checkpoint=fast"]),
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip

    def dsn_of(self, database: str) -> str:
        return dsn_for(self.dsn, database)


_PG_HINT = "install PostgreSQL (`apt-get install postgresql`) or set PG_DSN to a server you have"


def find_postgres(
    explicit_dsn: str, run_dir: Path, port: int = 55432
) -> tuple[str, PrivatePostgres | None]:
    """An admin DSN of a Postgres that answers, and the private cluster if one was started."""
    if explicit_dsn:
        if not pg_answers(explicit_dsn):
            raise InfraError(f"PG_DSN is set but Postgres does not answer at {explicit_dsn}")
        return explicit_dsn, None
    if pg_answers(DEFAULT_PG_DSN):
        return DEFAULT_PG_DSN, None
    private = PrivatePostgres(run_dir / "pgdata", port)
    if pg_answers(private.dsn):
        return private.dsn, None  # ours, left running by an earlier start
    private.start()
    return private.dsn, private


def dsn_for(admin_dsn: str, database: str) -> str:
    """The DSN of `database` on the server of `admin_dsn` (same user, host, port)."""
    base, _, _ = admin_dsn.rpartition("/")
    return f"{base}/{database}"


def _quoted(name: str) -> str:
    if not name or '"' in name or "\0" in name:
        raise ValueError(f"not a database name: {name!r}")
    return f'"{name}"'


async def create_database(
    admin_dsn: str, name: str, *, template: str | None = None, keep_existing: bool = False
) -> str:
    """Database `name` on the server of `admin_dsn` (a copy of `template` when
    given, else empty); returns its DSN. A database left under that name (by
    an earlier run) is dropped first, unless `keep_existing`: then it is kept
    as it is (`make up` keeps the stack's data)."""
    connection = await asyncpg.connect(admin_dsn)
    try:
        exists = await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists and keep_existing:
            return dsn_for(admin_dsn, name)
        if exists:
            await _drop(connection, name)
        copy = f" TEMPLATE {_quoted(template)}" if template is not None else ""
        await connection.execute(f"CREATE DATABASE {_quoted(name)}{copy}")
    finally:
        await connection.close()
    return dsn_for(admin_dsn, name)


async def drop_database(admin_dsn: str, name: str) -> None:
    """Drops database `name`, cutting its open connections; quiet if it is gone."""
    connection = await asyncpg.connect(admin_dsn)
    try:
        await _drop(connection, name)
    finally:
        await connection.close()


async def _drop(connection: asyncpg.Connection, name: str) -> None:
    await connection.execute(f"DROP DATABASE IF EXISTS {_quoted(name)} WITH (FORCE)")


@contextlib.asynccontextmanager
async def throwaway_database(
    admin_dsn: str, name: str, *, template: str | None = None
) -> AsyncIterator[str]:
    """`create_database` for the block (yields the DSN), dropped when it exits."""
    dsn = await create_database(admin_dsn, name, template=template)
    try:
        yield dsn
    finally:
        await drop_database(admin_dsn, name)


async def wait_serving(target: str, timeout_s: float) -> bool:
    """True once the gRPC server at `target` reports SERVING (grpc.health.v1);
    False when it has not within `timeout_s`."""
    import asyncio

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout_s
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return True
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.05)
    return False
