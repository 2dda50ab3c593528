"""The local stack: one library for `make up`, the end-to-end tests and the
benchmarks, and its command line, `python -m tools.stack up|down|status`.

`Stack` runs the four services as processes, each on its own Redis from its
pinned config (services/<name>/redis.conf; standalone, or a 3-master Redis
Cluster), on a Postgres database made beforehand (tools/localinfra.py).
`stack_env` is the one place the services' settings for it are written.
Ports are fixed (the ones `make up` serves on) or free (tests, benchmarks).

`up` finds or starts Postgres (PG_DSN; else 127.0.0.1:5432; else a private
cluster under .run/), creates the `treasure` database, starts one Redis per
service (ports 6381-6384; CLUSTER=1: clusters on 7011-7043), applies every
service's migrations, starts the four services (gRPC 50051-50054, metrics
9101-9104) detached, waits until each reports SERVING, and prints endpoints,
tokens and log files. Running it twice is safe: what runs is kept. `down`
stops, by pid, exactly what `up` started and nothing else.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from libs import pg
from libs.channels import BALANCING
from libs.config import peer_target
from tools import localinfra
from tools.localinfra import (
    InfraError,
    PrivatePostgres,
    PrivateStandby,
    RedisCluster,
    RedisServer,
    create_database,
    dsn_for,
    find_postgres,
    free_ports,
    pg_answers,
    stop_pid,
)
from treasure.geo.v1 import geo_pb2_grpc
from treasure.leaderboard.v1 import leaderboard_pb2_grpc
from treasure.scan.v1 import scan_pb2_grpc
from treasure.score.v1 import score_pb2_grpc

REPO = Path(__file__).resolve().parents[1]
RUN = REPO / ".run"
PIDS = RUN / "pids"
LOGS = RUN / "logs"

#: The services that send stale-tolerant reads to a read replica when given one.
READ_REPLICA_SERVICES = ("scan", "geo")

#: The services in the order they start (each one's peers first).
ORDER = ("geo", "score", "leaderboard", "scan")
WITH_PG = ("geo", "score", "scan")
#: `make up`'s ports: name -> (gRPC, metrics, standalone Redis).
FIXED_PORTS = {
    "geo": (50054, 9104, 6384),
    "score": (50052, 9102, 6382),
    "leaderboard": (50053, 9103, 6383),
    "scan": (50051, 9101, 6381),
}
DATABASE = "treasure"

#: The local stack's tokens (for the local stack and the tests only).
CLIENT_TOKEN = "local-client-token"
SERVICE_TOKEN = "local-service-token"
ADMIN_TOKEN = "local-admin-token"
TOKENS = {
    "AUTH_CLIENT_TOKENS": CLIENT_TOKEN,
    "AUTH_SERVICE_TOKENS": SERVICE_TOKEN,
    "AUTH_ADMIN_TOKENS": ADMIN_TOKEN,
    "AUTH_PEER_TOKEN": SERVICE_TOKEN,
}

#: The settings of a stack that lives for one run (tests, benchmarks): a
#: short shutdown grace and startup timeout. `make up` keeps the defaults.
SHORT_LIVED = {"SHUTDOWN_GRACE_S": "3", "STARTUP_TIMEOUT_S": "20", "LOG_LEVEL": "INFO"}

#: Channels to the stack reconnect at once when a service comes back (gRPC's
#: default reconnect backoff grows to minutes; a caller must not wait on it),
#: and balance over a service's replicas as the services' own channels do:
#: round robin over those that report SERVING.
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
    ("grpc.service_config", json.dumps(BALANCING)),
]
#: `make up REPLICAS=N`: replica i (from 2) of a service listens 10 * (i - 1)
#: above the first one's gRPC and metrics ports.
REPLICA_PORT_STEP = 10
MAX_REPLICAS = 9


def cluster_ports(name: str) -> list[int]:
    """With fixed ports, service N's Redis Cluster masters listen on 70N1-70N3."""
    index = list(FIXED_PORTS).index(name) + 1
    return [7000 + index * 10 + i for i in (1, 2, 3)]


def stack_env(
    pg_dsn: str,
    grpc_ports: Mapping[str, int],
    metrics_ports: Mapping[str, int],
    redis_urls: Mapping[str, str],
    peers: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Every setting of the four services in a local stack: tokens, where each
    listens, its Redis, its peers' addresses (`peers`: each service's address
    list, when it runs as replicas) and (but the leaderboard) Postgres."""
    env = dict(TOKENS)
    for name in ORDER:
        prefix = name.upper()
        env[f"{prefix}_GRPC_LISTEN"] = f"127.0.0.1:{grpc_ports[name]}"
        env[f"{prefix}_METRICS_LISTEN"] = f"127.0.0.1:{metrics_ports[name]}"
        env[f"{prefix}_REDIS_URL"] = redis_urls[name]
        env[f"{prefix}_SERVICE_ADDR"] = (peers or {}).get(name) or f"127.0.0.1:{grpc_ports[name]}"
        if name in WITH_PG:
            env[f"{prefix}_PG_DSN"] = pg_dsn
    return env


def start_redis(
    name: str,
    workdir: Path,
    *,
    cluster: bool = False,
    ports: list[int] | None = None,
    detach: bool = False,
) -> RedisServer | RedisCluster:
    """A service's Redis from its pinned config under `workdir`: one server,
    or a fresh 3-master cluster; on `ports` (one, or the masters') or free ones."""
    config = REPO / "services" / name / "redis.conf"
    if cluster:
        for stale in workdir.glob("*/nodes-*.conf"):
            stale.unlink()  # a fresh cluster each time
        return RedisCluster(config, workdir, ports=list(ports or []), detach=detach).start()
    if ports:
        return RedisServer(config, ports[0], workdir, detach=detach).start()
    return RedisServer.on_free_port(config, workdir, detach=detach)


def spawn(
    name: str, env: Mapping[str, str], log_path: Path, detach: bool = False
) -> subprocess.Popen:
    """`python -m services.<name>` as a real process with `env` added, its
    output appended to `log_path`; in a session of its own when `detach`."""
    log = open(log_path, "ab")  # noqa: SIM115 - closed by the process's end
    return subprocess.Popen(
        [sys.executable, "-m", f"services.{name}"],
        cwd=REPO,
        env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=detach,
    )


async def migrate(dsn: str) -> dict[str, list[int]]:
    """Every service's migrations applied to the database at `dsn`; what each applied."""
    pool = await pg.create_pool(dsn, min_size=1, max_size=2)
    try:
        return {
            name: await pg.migrate(pool, name, REPO / "services" / name / "migrations")
            for name in WITH_PG
        }
    finally:
        await pool.close()


class Stack:
    """The four services as processes, each on its own Redis, on the Postgres
    database `pg_dsn`; files (logs, Redis dirs) under `workdir`.

    `replicas`: processes of each service, each on its own ports; the first
    is named as its service ("geo"), the others "geo-2", ... (`instances`),
    and every caller is given all of them (`target`).
    `fixed_ports`: the ports `make up` serves on (FIXED_PORTS, cluster_ports);
    else free ones, chosen once the Redis servers hold theirs (a port picked
    earlier is not bound yet, and a cluster node could pick it too).
    `cluster`: each service on a 3-master Redis Cluster. A stack its process
    owns (`detach` False: tests, benchmarks) lives for one run: its services
    get SHORT_LIVED settings, and `stop()` ends them and the Redis servers. A
    detached stack (`make up`) outlives the process that started it: its
    processes run in sessions of their own with the services' default
    settings, and are stopped by pid. `extra_env` is added to every
    service's settings (and may change between restarts).
    """

    def __init__(
        self,
        workdir: Path,
        pg_dsn: str,
        *,
        fixed_ports: bool = False,
        cluster: bool = False,
        detach: bool = False,
        logs: Path | None = None,
        replicas: int = 1,
        **extra_env: str,
    ) -> None:
        if not 1 <= replicas <= MAX_REPLICAS:
            raise ValueError(f"replicas must be 1 to {MAX_REPLICAS}, got {replicas}")
        self.replicas = replicas
        self.workdir = workdir
        self.pg_dsn = pg_dsn
        self.fixed_ports = fixed_ports
        self.cluster = cluster
        self.detach = detach
        self.logs = logs or workdir
        self.extra_env = extra_env
        self.redis: dict[str, RedisServer | RedisCluster] = {}
        self.ports: dict[str, int] = {}
        self.metrics_ports: dict[str, int] = {}
        if fixed_ports:
            for name in ORDER:
                for i, instance in enumerate(self.instances(name)):
                    self.ports[instance] = FIXED_PORTS[name][0] + i * REPLICA_PORT_STEP
                    self.metrics_ports[instance] = FIXED_PORTS[name][1] + i * REPLICA_PORT_STEP
        self.processes: dict[str, subprocess.Popen] = {}
        self._channels: list[grpc.aio.Channel] = []

    def instances(self, service: str) -> list[str]:
        """The names of a service's processes: "geo", then "geo-2", ..."""
        return [service, *(f"{service}-{i}" for i in range(2, self.replicas + 1))]

    def all_instances(self) -> list[str]:
        return [instance for name in ORDER for instance in self.instances(name)]

    @staticmethod
    def service_of(instance: str) -> str:
        return instance if instance in FIXED_PORTS else instance.rsplit("-", 1)[0]

    def addr(self, service: str) -> str:
        """The address of one process: a service's first replica, or a replica by name."""
        return f"127.0.0.1:{self.ports[service]}"

    def target(self, service: str) -> str:
        """The gRPC target of every replica of a service (what its callers get)."""
        return peer_target(",".join(self.addr(i) for i in self.instances(service)))

    def redis_ports(self, name: str) -> list[int] | None:
        """The port(s) a service's Redis is to listen on; None: free ones."""
        if not self.fixed_ports:
            return None
        return cluster_ports(name) if self.cluster else [FIXED_PORTS[name][2]]

    def redis_url(self, name: str) -> str:
        if name in self.redis:
            return self.redis[name].url
        ports = self.redis_ports(name)  # fixed: known before (or without) starting it
        if ports is None:
            raise KeyError(f"the {name} Redis has not started: its port is not chosen yet")
        scheme = "redis+cluster" if self.cluster else "redis"
        return f"{scheme}://127.0.0.1:{ports[0]}" + ("" if self.cluster else "/0")

    def env(self, instance: str | None = None) -> dict[str, str]:
        """The settings of the stack's services; with `instance`, of that
        process (its own listen ports)."""
        env = stack_env(
            self.pg_dsn,
            self.ports,
            self.metrics_ports,
            {n: self.redis_url(n) for n in ORDER},
            {n: self.target(n) for n in ORDER} if self.replicas > 1 else None,
        )
        if instance is not None:
            prefix = self.service_of(instance).upper()
            env[f"{prefix}_GRPC_LISTEN"] = self.addr(instance)
            env[f"{prefix}_METRICS_LISTEN"] = f"127.0.0.1:{self.metrics_ports[instance]}"
        if not self.detach:
            env.update(SHORT_LIVED)
        env.update(self.extra_env)
        return env

    def launch_redis(self, name: str) -> RedisServer | RedisCluster:
        """Starts a service's Redis (blocking); the stack stops it in `stop()`."""
        suffix = "-cluster" if self.cluster else ""
        server = start_redis(
            name,
            self.workdir / f"redis-{name}{suffix}",
            cluster=self.cluster,
            ports=self.redis_ports(name),
            detach=self.detach,
        )
        self.redis[name] = server
        return server

    async def start(self) -> Stack:
        """Every Redis, then every service; returns once all are SERVING."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        # Side by side: a Redis Cluster takes about 2 s to agree it is whole.
        started = await asyncio.gather(
            *(asyncio.to_thread(self.launch_redis, name) for name in ORDER),
            return_exceptions=True,
        )
        for failed in started:
            if isinstance(failed, BaseException):
                raise failed  # stop() stops whatever did start
        if not self.fixed_ports:
            instances = self.all_instances()
            ports = free_ports(2 * len(instances))
            self.ports = dict(zip(instances, ports[: len(instances)], strict=True))
            self.metrics_ports = dict(zip(instances, ports[len(instances) :], strict=True))
        for instance in self.all_instances():
            self.spawn(instance)
        await self.wait_serving()
        return self

    def spawn(self, instance: str) -> subprocess.Popen:
        """Starts a service's process, or one replica's by name (it runs until
        stopped or killed); its log is `<instance>.log`."""
        self.logs.mkdir(parents=True, exist_ok=True)
        process = spawn(
            self.service_of(instance),
            self.env(instance),
            self.logs / f"{instance}.log",
            detach=self.detach,
        )
        self.processes[instance] = process
        return process

    async def add_replica(self, service: str) -> str:
        """One more process of `service` on free ports, serving once this
        returns; its name. Only whoever is given its address calls it (the
        other services keep their peers); `retire` ends it."""
        taken = {name for name in self.processes if self.service_of(name) == service}
        name = next(f"{service}-{i}" for i in range(2, 100) if f"{service}-{i}" not in taken)
        self.ports[name], self.metrics_ports[name] = free_ports(2)
        self.spawn(name)
        await self.wait_serving([name])
        return name

    async def retire(self, name: str) -> None:
        """Ends a process `add_replica` started (SIGTERM) and forgets it."""
        await self.stop_service(name)
        del self.processes[name], self.ports[name], self.metrics_ports[name]

    async def wait_serving(
        self, names: Iterable[str] | None = None, timeout_s: float = 30.0
    ) -> None:
        """Returns once each of `names` (processes; default: all) is SERVING;
        else raises TimeoutError saying, for each that is not, its exit status
        and the end of its log."""
        names = list(self.all_instances() if names is None else names)
        ready = await asyncio.gather(
            *(localinfra.wait_serving(self.addr(name), timeout_s) for name in names)
        )
        late = [name for name, ok in zip(names, ready, strict=True) if not ok]
        if late:
            raise TimeoutError("\n".join(self._not_serving(name, timeout_s) for name in late))

    def _not_serving(self, name: str, timeout_s: float) -> str:
        process = self.processes.get(name)
        if process is None:
            state = "started earlier"
        elif (status := process.poll()) is None:
            state = "running"
        else:
            state = f"exited {status}"
        try:
            tail = "\n".join(self.log(name).splitlines()[-15:])
        except OSError:
            tail = "(no log)"
        return (
            f"{name} on {self.addr(name)} not SERVING after {timeout_s:g}s ({state}); "
            f"{self.logs / f'{name}.log'} ends:\n{tail}"
        )

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        process = self.processes[name]
        process.send_signal(sig)
        process.wait(30)

    async def stop_service(self, name: str) -> None:
        """SIGTERM (graceful shutdown) and wait for the process to end."""
        process = self.processes[name]
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            await asyncio.to_thread(process.wait, 30)

    async def restart(self, name: str) -> None:
        """The service stopped (SIGTERM) and started again with `env()` as it is now."""
        if self.processes[name].poll() is None:
            self.kill(name, signal.SIGTERM)
        self.spawn(name)
        await self.wait_serving([name])

    def pids(self) -> dict[str, int]:
        """The pid of each service process."""
        return {name: process.pid for name, process in self.processes.items()}

    def exited(self) -> dict[str, int]:
        """Services whose process has ended, with its exit status."""
        return {
            name: code
            for name, process in self.processes.items()
            if (code := process.poll()) is not None
        }

    async def health(self, timeout_s: float = 2.0) -> dict[str, str]:
        """Each service's grpc.health.v1 status (or the error) right now."""
        statuses: dict[str, str] = {}
        for name in self.all_instances():
            async with grpc.aio.insecure_channel(self.addr(name)) as channel:
                try:
                    reply = await health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(), timeout=timeout_s
                    )
                    statuses[name] = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
                except grpc.aio.AioRpcError as err:
                    statuses[name] = err.code().name
        return statuses

    def redis_nodes(self, name: str) -> list[RedisServer]:
        """The redis-server processes of a service's Redis (one, or a cluster's masters)."""
        server = self.redis[name]
        return list(server.nodes) if isinstance(server, RedisCluster) else [server]

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def channel(self, service: str) -> grpc.aio.Channel:
        """A channel to every replica of a service (or to one process, by its
        instance name), closed by `stop()`."""
        target = self.target(service) if service in FIXED_PORTS else self.addr(service)
        # Connections of its own: a new channel after a restart connects anew,
        # rather than share an older channel's connection still in backoff.
        options = [*CHANNEL_OPTIONS, ("grpc.use_local_subchannel_pool", 1)]
        channel = grpc.aio.insecure_channel(target, options=options)
        self._channels.append(channel)
        return channel

    def scan(self) -> scan_pb2_grpc.ScanServiceStub:
        return scan_pb2_grpc.ScanServiceStub(self.channel("scan"))

    def geo(self) -> geo_pb2_grpc.GeoServiceStub:
        return geo_pb2_grpc.GeoServiceStub(self.channel("geo"))

    def score(self) -> score_pb2_grpc.ScoreServiceStub:
        return score_pb2_grpc.ScoreServiceStub(self.channel("score"))

    def leaderboard(self) -> leaderboard_pb2_grpc.LeaderboardServiceStub:
        return leaderboard_pb2_grpc.LeaderboardServiceStub(self.channel("leaderboard"))

    async def stop(self, keep_files: bool = False) -> None:
        """Ends the services (SIGTERM, then SIGKILL after 15 s) and the Redis
        servers; removes `workdir` unless `keep_files`."""
        for channel in self._channels:
            await channel.close()
        for name in reversed(self.all_instances()):
            process = self.processes.get(name)
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                await asyncio.to_thread(process.wait, 15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for server in self.redis.values():
            server.stop()
        if not keep_files:
            shutil.rmtree(self.workdir, ignore_errors=True)


# -- `make up`, `make down`, `make status` --------------------------------------


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


def _up_redis(stack: Stack, name: str) -> None:
    """The service's Redis, unless it runs already; its pid(s) recorded."""
    if _pid_of(f"redis-{name}-1" if stack.cluster else f"redis-{name}"):
        return
    server = stack.launch_redis(name)
    if isinstance(server, RedisCluster):
        for i, node in enumerate(server.nodes, 1):
            _record(f"redis-{name}-{i}", node.pid)
    else:
        _record(f"redis-{name}", server.pid)


#: `make up STANDBY=1`: a private primary and its streaming standby, on these ports.
STANDBY_PORTS = (55442, 55443)


def _private_started(cluster: PrivatePostgres) -> None:
    """Notes a private cluster `up` started, for `down` to stop (standby after primary)."""
    with open(RUN / "private-pg", "a") as started:
        started.write(f"{cluster.datadir}\n")
    print(f"  started a private Postgres in {cluster.datadir} on port {cluster.port}")


def _up_standby_pair() -> tuple[str, str]:
    """A private primary and its streaming standby (`pg_basebackup -R`), each
    started unless it runs already; (admin DSN of the primary, of the standby)."""
    primary = PrivatePostgres(RUN / "pg-primary", STANDBY_PORTS[0])
    standby = PrivateStandby(RUN / "pg-standby", STANDBY_PORTS[1], primary=primary)
    for cluster in (primary, standby):
        if not pg_answers(cluster.dsn):
            cluster.start()
            _private_started(cluster)
    return primary.dsn, standby.dsn


#: The shape of the stack `up` started (replicas, cluster, standby), kept while it runs.
SHAPE = RUN / "shape.json"
_SHAPE_DEFAULTS = {"replicas": 1, "cluster": False, "standby": False}


def _shape(args: argparse.Namespace) -> dict | str:
    """The stack's shape for this `up`: what was asked, the rest as the running
    stack has it (so `make demo` after `make up REPLICAS=2 STANDBY=1` keeps
    them), else the defaults; a string says why not (a running stack of
    another shape: processes keep the peers and databases they started with)."""
    running = any(_pid_of(name) for name in _service_names())
    kept = json.loads(SHAPE.read_text()) if running and SHAPE.exists() else {}
    shape = {}
    for key, default in _SHAPE_DEFAULTS.items():
        asked = getattr(args, key)
        if asked is not None and key in kept and asked != kept[key]:
            return (
                f"the stack runs with {key}={kept[key]}; `make down` first to start it "
                f"with {key}={asked}"
            )
        shape[key] = asked if asked is not None else kept.get(key, default)
    return shape


def up(args: argparse.Namespace) -> int:
    RUN.mkdir(exist_ok=True)
    LOGS.mkdir(exist_ok=True)
    shape = _shape(args)
    if isinstance(shape, str):
        print(shape, file=sys.stderr)
        return 1
    SHAPE.write_text(json.dumps(shape))
    args = argparse.Namespace(**{**vars(args), **shape})
    read_env: dict[str, str] = {}
    try:
        if args.standby:
            admin_dsn, standby_dsn = _up_standby_pair()
        else:
            admin_dsn, private = find_postgres(os.environ.get("PG_DSN", ""), RUN)
            if private is not None:
                _private_started(private)
    except (InfraError, subprocess.CalledProcessError) as exc:
        print(f"postgres: {exc}", file=sys.stderr)
        return 1
    dsn = asyncio.run(create_database(admin_dsn, DATABASE, keep_existing=True))
    if args.standby:  # the database reaches the standby with the primary's WAL
        read_dsn = dsn_for(standby_dsn, DATABASE)
        read_env = {f"{name.upper()}_PG_READ_DSN": read_dsn for name in READ_REPLICA_SERVICES}
    stack = Stack(
        RUN,
        dsn,
        fixed_ports=True,
        cluster=args.cluster,
        detach=True,
        logs=LOGS,
        replicas=args.replicas,
        **read_env,
    )
    env = stack.env()
    (RUN / "stack.env").write_text("".join(f"{k}={v}\n" for k, v in sorted(env.items())))

    for name in ORDER:
        try:
            _up_redis(stack, name)
        except (InfraError, subprocess.CalledProcessError) as exc:
            print(f"redis for {name}: {exc}", file=sys.stderr)
            return 1

    for name, applied in asyncio.run(migrate(dsn)).items():
        if applied:
            print(f"  migrated {name}: {applied}")

    for instance in stack.all_instances():
        if not _pid_of(instance):
            _record(instance, stack.spawn(instance).pid)

    try:
        asyncio.run(stack.wait_serving(timeout_s=args.timeout))
    except TimeoutError as exc:
        print(exc, file=sys.stderr)
        return 1
    _print_summary(stack, env)
    return 0


def _service_names() -> list[str]:
    """Every process name `up` may have recorded, replicas included."""
    return [
        *ORDER,
        *(f"{n}-{i}" for n in ORDER for i in range(2, MAX_REPLICAS + 1)),
    ]


def _redis_names() -> list[str]:
    return [
        *(f"redis-{n}" for n in ORDER),
        *(f"redis-{n}-{i}" for n in ORDER for i in (1, 2, 3)),
    ]


def _print_summary(stack: Stack, env: dict[str, str]) -> None:
    print("\nTreasure Hunt Engine is up.\n")
    print(f"  {'service':<14} {'gRPC':<17} {'metrics':<22} {'redis':<24} log")
    for name in stack.all_instances():
        redis = env[stack.service_of(name).upper() + "_REDIS_URL"]
        print(
            f"  {name:<14} {stack.addr(name):<17} http://127.0.0.1:{stack.metrics_ports[name]}/metrics"
            f"  {redis:<30}  .run/logs/{name}.log"
        )
    if stack.replicas > 1:
        print("\n  callers balance over the replicas (round robin, SERVING only):")
        for name in ORDER:
            print(f"    {name.upper()}_SERVICE_ADDR={stack.target(name)}")
    print(f"\n  postgres: {stack.pg_dsn}")
    read_dsn = env.get("SCAN_PG_READ_DSN")
    if read_dsn:
        print(f"  read replica (streaming standby) for scan and geo: {read_dsn}")
    print(
        "  tokens (local stack only): "
        f"client={CLIENT_TOKEN} service={SERVICE_TOKEN} admin={ADMIN_TOKEN}"
    )
    print("  settings: .run/stack.env    stop: make down\n")


def down(_args: argparse.Namespace) -> int:
    stopped = []
    for name in [*reversed(_service_names()), *_redis_names()]:
        path = PIDS / f"{name}.pid"
        pid = _pid_of(name)
        if pid is not None:
            stop_pid(pid, timeout_s=20)
            stopped.append(name)
        path.unlink(missing_ok=True)
    private = RUN / "private-pg"
    if private.exists():  # standbys were written after their primary: stopped first
        for datadir in reversed(private.read_text().split()):
            PrivatePostgres(Path(datadir), 0).stop()
            stopped.append(f"postgres (private, {Path(datadir).name})")
        private.unlink()
    SHAPE.unlink(missing_ok=True)
    print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    return 0


def status(_args: argparse.Namespace) -> int:
    """The pid of each part of the stack; exit 0 only when every part runs."""
    rows = {
        name: _pid_of(name)
        for name in [*_service_names(), *_redis_names()]
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
    # Each option left out is taken from the running stack, else its default (_shape).
    up_parser.add_argument(
        "--cluster",
        action=argparse.BooleanOptionalAction,
        help="a 3-master Redis Cluster per service",
    )
    up_parser.add_argument(
        "--standby",
        action=argparse.BooleanOptionalAction,
        help="a private Postgres primary with a streaming standby for the stale-tolerant reads",
    )
    up_parser.add_argument(
        "--replicas",
        type=int,
        choices=range(1, MAX_REPLICAS + 1),
        metavar="N",
        help=f"processes of each service, each on its own ports (1 to {MAX_REPLICAS})",
    )
    up_parser.set_defaults(run=up)
    commands.add_parser("down", help="stop what `up` started").set_defaults(run=down)
    commands.add_parser("status", help="pids of what runs").set_defaults(run=status)
    args = parser.parse_args()
    sys.exit(args.run(args))


if __name__ == "__main__":
    main()
