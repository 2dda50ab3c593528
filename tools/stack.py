"""The local stack: `python -m tools.stack up|down|status|env`.

`up` finds or starts Postgres (PG_DSN; else 127.0.0.1:5432; else a private
cluster under .run/), creates the `treasure` database, starts one
redis-server per service from its pinned config (services/<name>/redis.conf,
ports 6381-6384), applies every service's migrations, starts the four
services as separate processes, waits until each reports SERVING, and prints
endpoints, tokens and log files. Running it twice is safe: what runs is kept.
`down` stops, by pid, exactly what `up` started and nothing else.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import asyncpg

from libs import pg
from libs.localinfra import (
    InfraError,
    PrivatePostgres,
    RedisCluster,
    RedisServer,
    find_postgres,
    stop_pid,
    wait_serving,
)

REPO = Path(__file__).resolve().parents[1]
RUN = REPO / ".run"
PIDS = RUN / "pids"
LOGS = RUN / "logs"

SERVICES = {  # name: (grpc port, metrics port, redis port)
    "geo": (50054, 9104, 6384),
    "score": (50052, 9102, 6382),
    "leaderboard": (50053, 9103, 6383),
    "scan": (50051, 9101, 6381),
}
WITH_PG = ("geo", "score", "scan")
DATABASE = "treasure"
LOCAL_TOKENS = {
    "AUTH_CLIENT_TOKENS": "local-client-token",
    "AUTH_SERVICE_TOKENS": "local-service-token",
    "AUTH_ADMIN_TOKENS": "local-admin-token",
    "AUTH_PEER_TOKEN": "local-service-token",
}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is not alive
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except OSError:
        return False


def _pid_of(name: str) -> int | None:
    path = PIDS / f"{name}.pid"
    if not path.exists():
        return None
    pid = int(path.read_text().split()[0])
    return pid if _alive(pid) else None


def _record(name: str, pid: int) -> None:
    PIDS.mkdir(parents=True, exist_ok=True)
    (PIDS / f"{name}.pid").write_text(f"{pid}\n")


def cluster_ports(name: str) -> list[int]:
    """With CLUSTER=1, service N's Redis Cluster masters listen on 70N1-70N3."""
    index = list(SERVICES).index(name) + 1
    return [7000 + index * 10 + i for i in (1, 2, 3)]


def stack_env(pg_dsn_base: str, cluster: bool = False) -> dict[str, str]:
    """Every setting of the four services in the local stack."""
    env = dict(LOCAL_TOKENS)
    dsn = f"{pg_dsn_base.rpartition('/')[0]}/{DATABASE}"
    for name, (grpc_port, metrics_port, redis_port) in SERVICES.items():
        prefix = name.upper()
        env[f"{prefix}_GRPC_LISTEN"] = f"127.0.0.1:{grpc_port}"
        env[f"{prefix}_METRICS_LISTEN"] = f"127.0.0.1:{metrics_port}"
        env[f"{prefix}_REDIS_URL"] = (
            f"redis+cluster://127.0.0.1:{cluster_ports(name)[0]}"
            if cluster
            else f"redis://127.0.0.1:{redis_port}/0"
        )
        env[f"{prefix}_SERVICE_ADDR"] = f"127.0.0.1:{grpc_port}"
        if name in WITH_PG:
            env[f"{prefix}_PG_DSN"] = dsn
    return env


async def _ensure_database(admin_dsn: str) -> None:
    connection = await asyncpg.connect(admin_dsn)
    try:
        if not await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE):
            await connection.execute(f"CREATE DATABASE {DATABASE}")
    finally:
        await connection.close()


async def _migrate(dsn: str) -> None:
    pool = await pg.create_pool(dsn, min_size=1, max_size=2)
    try:
        for name in WITH_PG:
            applied = await pg.migrate(pool, name, REPO / "services" / name / "migrations")
            if applied:
                print(f"  migrated {name}: {applied}")
    finally:
        await pool.close()


async def _wait_serving(targets: dict[str, str], timeout_s: float) -> list[str]:
    """The names of the services not SERVING within `timeout_s`."""
    ready = await asyncio.gather(*(wait_serving(t, timeout_s) for t in targets.values()))
    return sorted(name for name, ok in zip(targets, ready, strict=True) if not ok)


def _start_redis(name: str, port: int, cluster: bool) -> None:
    """The service's Redis from its pinned config, unless it runs already."""
    config = REPO / "services" / name / "redis.conf"
    if not cluster:
        if not _pid_of(f"redis-{name}"):
            server = RedisServer(config, port, RUN / f"redis-{name}", detach=True).start()
            _record(f"redis-{name}", server.pid)
        return
    if _pid_of(f"redis-{name}-1"):
        return
    workdir = RUN / f"redis-{name}-cluster"
    for stale in workdir.glob("*/nodes-*.conf"):
        stale.unlink()  # a fresh cluster each time
    nodes = RedisCluster(config, workdir, ports=cluster_ports(name), detach=True).start().nodes
    for i, node in enumerate(nodes, 1):
        _record(f"redis-{name}-{i}", node.pid)


def up(args: argparse.Namespace) -> int:
    RUN.mkdir(exist_ok=True)
    LOGS.mkdir(exist_ok=True)
    try:
        admin_dsn, private = find_postgres(os.environ.get("PG_DSN", ""), RUN)
    except (InfraError, subprocess.CalledProcessError) as exc:
        print(f"postgres: {exc}", file=sys.stderr)
        return 1
    if private is not None:
        (RUN / "private-pg").write_text(str(private.datadir))
        print(f"  started a private Postgres in {private.datadir} on port {private.port}")
    asyncio.run(_ensure_database(admin_dsn))
    env = stack_env(admin_dsn, cluster=args.cluster)
    (RUN / "stack.env").write_text("".join(f"{k}={v}\n" for k, v in sorted(env.items())))

    for name, (_, _, redis_port) in SERVICES.items():
        try:
            _start_redis(name, redis_port, args.cluster)
        except (InfraError, subprocess.CalledProcessError) as exc:
            print(f"redis for {name}: {exc}", file=sys.stderr)
            return 1

    asyncio.run(_migrate(env["SCAN_PG_DSN"]))

    extra = {k: v for k, v in os.environ.items() if k.startswith("OTEL_") or k == "LOG_LEVEL"}
    for name in SERVICES:
        if _pid_of(name):
            continue
        log = open(LOGS / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
        process = subprocess.Popen(
            [sys.executable, "-m", f"services.{name}"],
            cwd=REPO,
            env={**os.environ, **env, **extra, "PYTHONUNBUFFERED": "1"},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _record(name, process.pid)

    targets = {name: f"127.0.0.1:{ports[0]}" for name, ports in SERVICES.items()}
    not_ready = asyncio.run(_wait_serving(targets, args.timeout))
    if not_ready:
        print(
            f"not SERVING after {args.timeout:g}s: {', '.join(not_ready)}; see {LOGS}/<name>.log",
            file=sys.stderr,
        )
        return 1
    _print_summary(env)
    return 0


def _redis_names() -> list[str]:
    return [
        *(f"redis-{n}" for n in SERVICES),
        *(f"redis-{n}-{i}" for n in SERVICES for i in (1, 2, 3)),
    ]


def _print_summary(env: dict[str, str]) -> None:
    print("\nTreasure Hunt Engine is up.\n")
    print(f"  {'service':<12} {'gRPC':<17} {'metrics':<22} {'redis':<24} log")
    for name, (grpc_port, metrics_port, _) in SERVICES.items():
        print(
            f"  {name:<12} 127.0.0.1:{grpc_port:<7} http://127.0.0.1:{metrics_port}/metrics"
            f"  {env[name.upper() + '_REDIS_URL']:<30}  .run/logs/{name}.log"
        )
    print(f"\n  postgres: {env['SCAN_PG_DSN']}")
    print(
        "  tokens (local stack only): client=local-client-token service=local-service-token admin=local-admin-token"
    )
    print("  settings: .run/stack.env    stop: make down\n")


def down(_args: argparse.Namespace) -> int:
    stopped = []
    for name in [*reversed(SERVICES), *_redis_names()]:
        path = PIDS / f"{name}.pid"
        pid = _pid_of(name)
        if pid is not None:
            stop_pid(pid, timeout_s=20)
            stopped.append(name)
        path.unlink(missing_ok=True)
    private = RUN / "private-pg"
    if private.exists():
        PrivatePostgres(Path(private.read_text().strip()), 0).stop()
        private.unlink()
        stopped.append("postgres (private)")
    print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    return 0


def status(_args: argparse.Namespace) -> int:
    """The pid of each part of the stack; exit 0 only when every part runs."""
    rows = {
        name: _pid_of(name)
        for name in [*SERVICES, *_redis_names()]
        if (PIDS / f"{name}.pid").exists()
    }
    if not rows:
        print("nothing runs (`make up` starts the stack)")
        return 1
    print(json.dumps(rows, indent=2))
    return 0 if all(rows.values()) else 1


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tools.stack", description=__doc__.split("\n\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    up_parser = commands.add_parser("up", help="start the local stack")
    up_parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait for SERVING"
    )
    up_parser.add_argument(
        "--cluster", action="store_true", help="a 3-master Redis Cluster per service"
    )
    up_parser.set_defaults(run=up)
    commands.add_parser("down", help="stop what `up` started").set_defaults(run=down)
    commands.add_parser("status", help="pids of what runs").set_defaults(run=status)
    args = parser.parse_args()
    sys.exit(args.run(args))


if __name__ == "__main__":
    main()
