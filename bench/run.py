"""`make bench`: the load benchmark of the whole system on this machine.

Starts its own stack (four services as processes, four Redis servers, a
throwaway Postgres database), imports the demo hunt, and drives SubmitScan
from a load generator in its own process (bench/loadgen.py): unloaded (one
in flight), at fixed concurrency, then open loop at 0.5, 1, 2 and 4 times
the best rate it reached (overload: goodput, the latency of what was
accepted, and how fast the rest was refused; no refused scan may be
recorded), and at half of it over 1 and over 100 client connections. At
half of it too, the first 200 scans after every service restarted (warm
start, with and without the warm-up; also with every Redis flushed).
Then it restarts the services exporting their spans (OTLP) to a sink in its
own process, as to Jaeger, and measures again: every span, then one trace in
ten. In the same run it measures the floor: a bare grpc.aio echo server and
client on this machine. Then it runs each service's own read benchmark
(bench/<service>_bench.py) when present. Results: bench/results/scan.json,
bench/results/summary.md and latency plots (PNG).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import redis

from bench.procstat import cpu_seconds, cpu_times, parent, postgres_cpu_seconds, steal_share
from tools.localinfra import create_database, drop_database, find_postgres, free_port, stop_pid
from tools.stack import Stack

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
HUNT_FILE = REPO / "demo" / "lisbon.yaml"
SERVICES = ("geo", "score", "leaderboard", "scan")


def loadgen(target: str, addr: str, *, rate: float | None = None, concurrency: int | None = None,
            duration: float, warmup: int = 50, connections: int = 1,
            requests: int | None = None, extra: tuple[str, ...] = ()) -> dict:  # fmt: skip
    options = ["--target", target, "--addr", addr, *extra,
               "--duration", str(duration), "--warmup", str(warmup), "--hunt-file", str(HUNT_FILE),
               "--connections", str(connections), "--keep-latencies"]  # fmt: skip
    options += ["--rate", str(rate)] if rate else ["--concurrency", str(concurrency)]
    options += ["--requests", str(requests)] if requests else []
    before = cpu_times()
    result = run_module("bench.loadgen", *options, timeout=duration + 120)
    result["steal_pct"] = round(100 * steal_share(before, cpu_times()), 1)
    return result


def run_module(module: str, *options: str, timeout: float, show_stderr: bool = False) -> dict:
    """`python -m module options...` in its own process; the JSON it prints."""
    command = [sys.executable, "-m", module, *options]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    if show_stderr:
        sys.stderr.write(done.stderr[-4000:])
    if done.returncode != 0:
        raise RuntimeError(f"{module} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout)


def describe(result: dict) -> str:
    load = (
        f"rate {result['offered_rate']:g}/s"
        if result["mode"] == "open"
        else f"{result['concurrency']} in flight"
    )
    if result.get("connections", 1) > 1:
        load += f" x{result['connections']} conns"
    return (
        f"{result['target']:<5} {load:<16} achieved {result['rate_per_s']:7.1f}/s  p50 {result['p50_ms']:6.2f}  "
        f"p90 {result['p90_ms']:6.2f}  p99 {result['p99_ms']:6.2f}  p99.9 {result['p999_ms']:7.2f} ms  "
        f"errors {result['errors']} (shed {result['shed']}, shed p99 {result['shed_p99_ms']:.2f} ms; "
        f"dropped {result['dropped']}, p99 {result['dropped_p99_ms']:.2f} ms)"
        f"  steal {result.get('steal_pct', 0):.0f}%"
    )


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(memory_gib, 1),
            "python": platform.python_version(), "kernel": platform.release()}  # fmt: skip


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    axes[0].set_prop_cycle(color=plt.cm.tab20.colors)  # a colour per run (up to 20)
    for run in runs:
        values = sorted(run["latencies_ms"])
        if not values:
            continue
        label = f"{run['target']} " + (
            f"{run['offered_rate']:g}/s" if run["mode"] == "open" else f"c={run['concurrency']}"
        )
        if run.get("connections", 1) > 1:
            label += f" x{run['connections']} conns"
        if "variant" in run:
            label += f" ({run['variant']})"
        ys = [i / len(values) for i in range(1, len(values) + 1)]
        axes[0].plot(values, ys, label=label)
    axes[0].set_xscale("log")
    axes[0].set_xlabel("latency (ms, log)")
    axes[0].set_ylabel("fraction of requests")
    axes[0].set_title("Latency CDF")
    axes[0].legend(fontsize=7)
    overload = [r for r in runs if "offered_x" in r and "variant" not in r]
    bounded = [r for r in runs if r.get("variant") == "pending_bound"]
    alone = [r for r in runs if r.get("variant") == "no_acceptors" and "offered_x" in r]
    offered = [r["offered_rate"] for r in overload]
    axes[1].plot(offered, [r["accepted_p50_ms"] for r in overload], "o-", label="accepted p50")
    axes[1].plot(offered, [r["accepted_p99_ms"] for r in overload], "o-", label="accepted p99")
    axes[1].plot(offered, [r["shed_p99_ms"] for r in overload], "x:", label="shed p99")
    if bounded:
        axes[1].plot([r["offered_rate"] for r in bounded], [r["accepted_p99_ms"] for r in bounded],
                     "o-", label=f"accepted p99, core queue bounded ({bounded[0]['pending_bound']})")  # fmt: skip
    if alone:
        axes[1].plot([r["offered_rate"] for r in alone], [r["accepted_p99_ms"] for r in alone],
                     "o-", label="accepted p99, grpc.aio's accept loop alone")  # fmt: skip
    axes[1].set_yscale("log")
    rate_axis = axes[1].twinx()
    rate_axis.plot(offered, [r["goodput_per_s"] for r in overload], "s--", color="green",
                   label="goodput /s")  # fmt: skip
    rate_axis.plot(offered, offered, ":", color="grey", label="offered /s")
    rate_axis.set_ylabel("answered /s")
    axes[1].set_xlabel("offered SubmitScan rate (/s): 0.5, 1, 2, 4 x capacity")
    axes[1].set_ylabel("latency ms (log)")
    axes[1].set_title("SubmitScan past capacity, open loop")
    axes[1].legend(fontsize=7, loc="upper left")
    rate_axis.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_festival(festival: dict, path: Path) -> None:
    """Per RPC: p99 against players, each over its own 3x-unloaded line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = festival["steps"]
    players = [s["players"] for s in steps]
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    axes[0].set_prop_cycle(color=plt.cm.tab10.colors)
    for action, unloaded in festival["unloaded"].items():
        p99 = [s["rpcs"].get(action, {}).get("p99_ms", float("nan")) for s in steps]
        axes[0].plot(players, [v / unloaded["p99_ms"] for v in p99], "o-", label=action)
    axes[0].axhline(festival["limit_x"], color="red", linestyle=":", label="limit")
    axes[0].axvline(festival["players_sustained"], color="grey", linestyle="--",
                    label=f"sustained: {festival['players_sustained']}")  # fmt: skip
    axes[0].set_xscale("log")
    axes[0].set_yscale("log")
    axes[0].set_xlabel("players (log)")
    axes[0].set_ylabel("p99 / unloaded p99 (log)")
    axes[0].set_title("Festival mix: each RPC's p99 against its own unloaded p99")
    axes[0].legend(fontsize=7)
    axes[1].plot(players, [s["requests_per_s"] for s in steps], "s-", label="requests /s")
    axes[1].axhline(
        festival["echo_8"], color="grey", linestyle=":", label="echo floor (8 in flight)"
    )
    axes[1].set_xscale("log")
    axes[1].set_yscale("log")
    axes[1].set_xlabel("players (log)")
    axes[1].set_ylabel("requests /s (log)")
    axes[1].set_title("Festival mix: requests answered")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


async def import_hunt(stack: Stack) -> None:
    """`huntctl import` of the demo hunt into `stack` (its JSON on stdout)."""
    from tools.huntctl import Ctl

    args = argparse.Namespace(token="local-admin-token", json=True, file=str(HUNT_FILE), geo_addr=stack.addr("geo"),
                              scan_addr=stack.addr("scan"), leaderboard_addr=stack.addr("leaderboard"))  # fmt: skip
    ctl = Ctl(args)
    try:
        await ctl.import_()
    finally:
        await ctl.close()


def run_scan_bench(args: argparse.Namespace, admin_dsn: str,
                   echo_8: float) -> tuple[list[dict], dict, dict]:  # fmt: skip
    name = f"thbench_{os.getpid()}"
    dsn = asyncio.run(create_database(admin_dsn, name))
    stack = Stack(
        REPO / ".run" / f"bench-{os.getpid()}", dsn, LOG_LEVEL="WARNING", SCAN_RATE_LIMIT="100"
    )
    runs: list[dict] = []
    try:
        asyncio.run(stack.start())
        asyncio.run(import_hunt(stack))
        addr = stack.addr("scan")
        postmaster = asyncio.run(postgres_pid(dsn))
        pids = {**stack.pids(), **redis_pids(stack)}

        def measure(**load) -> dict:
            before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            before["postgres"] = postgres_cpu_seconds(postmaster)
            result = loadgen("scan", addr, duration=args.duration, **load)
            if load.get("concurrency") == 8:
                result["cpu_ms_per_scan"] = cpu_per_scan(before, pids, postmaster, result)
            print(describe(result), flush=True)
            asyncio.run(settle(dsn, result))
            runs.append(result)
            return result

        for concurrency in (1, 8, 32, 64):
            measure(concurrency=concurrency)
        # Open loop at multiples of the best closed-loop rate: below, at and past capacity.
        capacity = max(r["rate_per_s"] for r in runs)
        for multiple in OVERLOAD:
            measure(rate=round(multiple * capacity))["offered_x"] = multiple
        for connections in CONNECTIONS:
            measure(rate=round(0.5 * capacity), connections=connections)["connections_run"] = True
        # Scan restarted another way, past capacity again (after the runs above,
        # which the long-running process serves): gRPC core's queue in front of
        # the gate bounded, and grpc.aio's own accept loop alone, as before
        # libs/acceptors (also at 8 and 32 in flight): same-run comparisons.
        for variant, env, concurrencies in VARIANTS:
            stack.extra_env.update(env)
            asyncio.run(stack.restart("scan"))
            pids["scan"] = stack.pids()["scan"]
            try:
                for concurrency in concurrencies:
                    measure(concurrency=concurrency)["variant"] = variant
                for multiple in (m for m in OVERLOAD if m >= 2.0):
                    run = measure(rate=round(multiple * capacity))
                    run.update(offered_x=multiple, variant=variant)
                    if variant == "pending_bound":
                        run["pending_bound"] = BOUNDED_PENDING
            finally:
                for setting in env:  # not `name`: that is the database's, dropped below
                    stack.extra_env.pop(setting)
                asyncio.run(stack.restart("scan"))
                pids["scan"] = stack.pids()["scan"]
        warm = run_warm_start(stack, round(0.5 * capacity))
        reads = run_reads(args, stack)
        reads["tiles"] = run_tiles(args, stack, dsn, echo_8)
        runs += run_traced(args, stack)
    finally:
        asyncio.run(stack.stop())
        asyncio.run(drop_database(admin_dsn, name))
    return runs, warm, reads


#: Festival steps (players) and seconds per step; WatchTop streams (#19).
FESTIVAL_STEPS = "200,400,800,1600,3200,6400,12800"
WATCH_STREAMS = {"quick": 1000, "full": 5000}


def run_reads(args: argparse.Namespace, stack: Stack) -> dict:
    """The festival's read workload (bench/festival.py) and thousands of
    WatchTop streams on the leaderboard process (bench/watchers.py), each
    from a load generator in its own process, on the stack as it stands."""

    run = functools.partial(run_module, show_stderr=True)

    step_s = 6.0 if args.quick else 15.0
    pids = {**stack.pids(), **redis_pids(stack)}
    stack_cpu = ",".join(f"{name}={pid}" for name, pid in pids.items())
    postmaster = asyncio.run(postgres_pid(stack.pg_dsn))
    festival = run("bench.festival", "--scan", stack.addr("scan"), "--geo", stack.addr("geo"),
                   "--score", stack.addr("score"), "--leaderboard", stack.addr("leaderboard"),
                   "--steps", FESTIVAL_STEPS, "--step-s", str(step_s),
                   "--stack-pids", stack_cpu, "--postmaster", str(postmaster),
                   timeout=30 * step_s + 600)  # fmt: skip
    streams = WATCH_STREAMS["quick" if args.quick else "full"]
    watchers = run("bench.watchers", "--leaderboard", stack.addr("leaderboard"),
                   "--scan", stack.addr("scan"), "--geo", stack.addr("geo"),
                   "--pid", str(stack.pids()["leaderboard"]),
                   "--metrics-port", str(stack.metrics_ports["leaderboard"]),
                   "--streams", str(streams), "--duration", "10" if args.quick else "30",
                   timeout=900)  # fmt: skip
    print(f"watchers: {json.dumps({k: watchers[k] for k in WATCH_KEYS})}", flush=True)
    return {"festival": festival, "watchers": watchers}


#: The tile path's saturation before #19 as a share of the echo floor: 835
#: GetTile/s answered (1,000/s offered) on a day the floor was 2,549 calls/s.
TILE_SATURATION_BEFORE_X = 835 / 2549
TILE_GRID = 100
TILE_BYTES = 2048


def run_tiles(args: argparse.Namespace, stack: Stack, dsn: str, echo_8: float) -> dict:
    """GetTile on the stack's geo from a load generator in its own process: a
    TILE_GRID x TILE_GRID hunt of TILE_BYTES tiles, every cell in turn in a
    shuffled order (the first run's warm-up touches each once). One in flight
    (full tiles and "not modified"), 8 and 32 in flight (with geo's and
    Postgres's CPU per call, full and not modified), then open loop at 2x and
    4x the saturation before #19 (as a share of this run's echo floor): on
    the one geo process, and on two replicas of geo balanced round-robin
    (what a deployment scales out to)."""
    asyncio.run(seed_tiles(stack, dsn))
    postmaster = asyncio.run(postgres_pid(dsn))
    before_rate = TILE_SATURATION_BEFORE_X * echo_8
    out: dict = {"grid": TILE_GRID, "tile_bytes": TILE_BYTES, "echo_8": echo_8,
                 "saturation_before_per_s": round(before_rate, 1)}  # fmt: skip

    def measure(label: str, addr: str, pids: list[int], load: dict, known: int = 0,
                warmup: int = 200, per_call: int = 1) -> None:  # fmt: skip
        cpu, pg_cpu = sum(map(cpu_seconds, pids)), postgres_cpu_seconds(postmaster)
        r = loadgen("tile", addr, duration=args.duration, warmup=warmup,
                    extra=("--tile-hunt", "tiles", "--tile-grid", str(TILE_GRID),
                           "--known-version", str(known), "--tiles-per-call", str(per_call)),
                    **load)  # fmt: skip
        # Per tile (a GetTiles call answers per_call of them).
        calls = max(1, (r["count"] - r["errors"] + r["warmup"]) * per_call)
        run = {key: r[key] for key in ("rate_per_s", "p50_ms", "p99_ms", "errors", "outcomes")}
        run["offered_per_s"] = load.get("rate")
        run["tiles_per_call"] = per_call
        run["geo_cpu_ms_per_tile"] = round((sum(map(cpu_seconds, pids)) - cpu) * 1000 / calls, 4)
        run["postgres_cpu_ms_per_tile"] = round(
            (postgres_cpu_seconds(postmaster) - pg_cpu) * 1000 / calls, 4
        )
        out[label] = run
        print(f"tiles, {label}: {describe(r)}", flush=True)

    addr, pid = stack.addr("geo"), stack.pids()["geo"]
    measure("1_full", addr, [pid], {"concurrency": 1}, warmup=TILE_GRID * TILE_GRID)
    measure("1_not_modified", addr, [pid], {"concurrency": 1}, known=1)
    measure("8_full", addr, [pid], {"concurrency": 8})
    measure("8_not_modified", addr, [pid], {"concurrency": 8}, known=1)
    measure("32_full", addr, [pid], {"concurrency": 32})
    # A map's view of 3 x 3 tiles in one GetTiles: what a tile costs there.
    measure("8_getTiles9_full", addr, [pid], {"concurrency": 8}, per_call=9)
    measure("8_getTiles9_not_modified", addr, [pid], {"concurrency": 8}, known=1, per_call=9)
    for multiple in (2, 4):
        measure(f"open_{multiple}x_before", addr, [pid], {"rate": round(multiple * before_rate)})
    second = asyncio.run(stack.add_replica("geo"))
    try:
        both = f"ipv4:{addr},{stack.addr(second)}"
        pids = [pid, stack.pids()[second]]
        measure("2_replicas_warm_up", both, pids, {"concurrency": 8}, warmup=TILE_GRID * TILE_GRID)
        for multiple in (2, 4):
            rate = {"rate": round(multiple * before_rate)}
            measure(f"2_replicas_open_{multiple}x_before", both, pids, rate)
    finally:
        asyncio.run(stack.retire(second))
    one = out["1_full"]["p99_ms"]
    for label in [k for k in out if "open_" in k]:
        out[label]["p99_over_1_in_flight_p99"] = round(out[label]["p99_ms"] / one, 2)
    out["not_modified_cpu_over_full"] = round(
        out["8_not_modified"]["geo_cpu_ms_per_tile"] / out["8_full"]["geo_cpu_ms_per_tile"], 3
    )
    # In GetTiles: a tile the caller holds against one it gets, and both against GetTile's.
    per_tile = {k: out[f"8_getTiles9_{k}"]["geo_cpu_ms_per_tile"] for k in ("full", "not_modified")}
    out["getTiles_not_modified_cpu_over_full"] = round(
        per_tile["not_modified"] / per_tile["full"], 3
    )
    out["getTiles_not_modified_cpu_over_getTile_full"] = round(
        per_tile["not_modified"] / out["8_full"]["geo_cpu_ms_per_tile"], 3
    )
    return out


async def seed_tiles(stack: Stack, dsn: str) -> None:
    """The "tiles" hunt: created through geo, its tiles bulk-loaded into the
    table (as a content pipeline would), the view refreshed through geo."""
    import asyncpg
    import grpc

    from libs.auth import bearer_metadata
    from tools.inprocess import hunt_message
    from treasure.geo.v1 import geo_pb2, geo_pb2_grpc

    admin = bearer_metadata("local-admin-token")
    async with grpc.aio.insecure_channel(stack.addr("geo")) as channel:
        geo = geo_pb2_grpc.GeoServiceStub(channel)
        await geo.CreateHunt(geo_pb2.CreateHuntRequest(
            hunt=hunt_message("tiles", columns=TILE_GRID, rows=TILE_GRID)), metadata=admin)  # fmt: skip
        connection = await asyncpg.connect(dsn)
        try:
            await connection.execute(
                """INSERT INTO geo.hunt_tiles (hunt_id, x, y, version, content_type, data)
                   SELECT 'tiles', x, y, 1, 'image/png', decode(repeat(md5(x || ':' || y), $1), 'hex')
                   FROM generate_series(0, $2) x, generate_series(0, $2) y""",
                TILE_BYTES // 16, TILE_GRID - 1,
            )  # fmt: skip
        finally:
            await connection.close()
        refreshed = await geo.RefreshTiles(geo_pb2.RefreshTilesRequest(hunt_id="tiles"),
                                           metadata=admin)  # fmt: skip
        assert refreshed.refreshed, "the tile view did not refresh"


WATCH_KEYS = ("streams", "delay_p50_ms", "delay_p99_ms", "cpu_cores", "bytes_per_watcher",
              "board_reads_per_s")  # fmt: skip


#: The calls measured after a restart, and how the restart found the caches.
WARM_REQUESTS = 200
#: Rounds of the warm-start sets: a steady set, then each restart (run_warm_start).
WARM_TRIALS = 5
RESTARTS = (
    ("restarted", False, {}),
    ("restarted_no_warmup", False, {"WARMUP_TIMEOUT_S": "0"}),
    ("restarted_redis_flushed", True, {}),
    ("restarted_redis_flushed_no_warmup", True, {"WARMUP_TIMEOUT_S": "0"}),
)


def run_warm_start(stack: Stack, rate: float) -> dict:
    """The first WARM_REQUESTS scans after every service restarted (each
    SERVING once warm), open loop at `rate`, against as many in steady state,
    with and without the warm-up; then the same with every Redis flushed as
    well (a cold cache tier). Each set comes from a new load generator with no
    warm-up calls, so the client's own first calls weigh in all of them alike.

    One set's p99 is its second-slowest call, and on this shared machine two
    steady sets a minute apart differ by up to 7x; so there are WARM_TRIALS
    rounds, each a steady set and then every restart. The reference is the
    median of the steady p99s, a case's p99 the median of its trials' (p99_x:
    its ratio), and every set is kept."""

    def first() -> dict:
        r = loadgen("scan", stack.addr("scan"), rate=rate, duration=0, warmup=0,
                    requests=WARM_REQUESTS)  # fmt: skip
        return {
            key: r[key]
            for key in ("count", "errors", "p50_ms", "p99_ms", "max_ms", "outcomes", "steal_pct")
        }

    steady: list[dict] = []
    sets: dict[str, list[dict]] = {label: [] for label, _, _ in RESTARTS}
    for _ in range(WARM_TRIALS):
        steady.append(first())
        for label, flush, settings in RESTARTS:
            stack.extra_env.update(settings)
            try:
                for service in SERVICES:
                    if flush:
                        for node in stack.redis_nodes(service):
                            redis.Redis.from_url(node.url).flushall()
                    asyncio.run(stack.restart(service))
            finally:
                for key in settings:
                    stack.extra_env.pop(key, None)
            sets[label].append(first())
            print(f"warm start, {label}: {sets[label][-1]}", flush=True)
    reference = statistics.median(s["p99_ms"] for s in steady)
    figures: dict = {
        "rate_per_s": rate,
        "requests": WARM_REQUESTS,
        "trials": WARM_TRIALS,
        "steady": {"p99_ms": reference, **_summary(steady), "sets": steady},
    }
    for label, trials in sets.items():
        figures[label] = {
            "p99_ms": statistics.median(t["p99_ms"] for t in trials),
            **_summary(trials),
            "p99_x": round(statistics.median(t["p99_ms"] for t in trials) / reference, 2),
            "trials_p99_x": [round(t["p99_ms"] / reference, 2) for t in trials],
            "sets": trials,
        }
    return figures  # the traced runs next restart every service with their own settings


def _summary(sets: list[dict]) -> dict:
    """What a case's sets say together: median p50, slowest call, errors."""
    return {
        "p50_ms": statistics.median(s["p50_ms"] for s in sets),
        "max_ms": max(s["max_ms"] for s in sets),
        "errors": sum(s["errors"] for s in sets),
    }


#: Offered load of the open-loop runs, as multiples of the measured capacity.
OVERLOAD = (0.5, 1.0, 2.0, 4.0)
#: SCAN_GRPC_MAX_PENDING of the overload runs with a bounded queue in gRPC's core.
BOUNDED_PENDING = 8
#: Scan restarted with these settings for the same-run comparisons
#: (run_scan_bench): its name, its settings, the closed-loop runs before 2x and 4x.
VARIANTS = (
    ("pending_bound", {"SCAN_GRPC_MAX_PENDING": str(BOUNDED_PENDING)}, ()),
    ("no_acceptors", {"GRPC_ACCEPTORS": "0"}, (8, 32)),
)
#: Client connections of the connection runs (open loop at 0.5x capacity).
CONNECTIONS = (1, 100)


def redis_pids(stack: Stack) -> dict[str, int]:
    """Each service's Redis server (standalone: one process each)."""
    return {f"redis_{name}": node.pid for name in SERVICES for node in stack.redis_nodes(name)[:1]}


async def postgres_pid(dsn: str) -> int:
    """The postmaster of the database at `dsn`: the parent of a backend."""
    import asyncpg

    connection = await asyncpg.connect(dsn)
    try:
        return parent(await connection.fetchval("SELECT pg_backend_pid()"))
    finally:
        await connection.close()


async def settle(dsn: str, result: dict, timeout_s: float = 60.0) -> None:
    """Waits until no scan is left 'received' (an overloaded run leaves a
    backlog the re-drive applies), and checks that no shed scan was recorded."""
    import asyncpg

    connection = await asyncpg.connect(dsn)
    try:
        shed = result.pop("shed_players", [])
        result["shed_recorded"] = await connection.fetchval(
            "SELECT count(*) FROM scan.scans WHERE player_id = ANY($1::text[])", shed
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            left = await connection.fetchval(
                "SELECT count(*) FROM scan.scans WHERE status = 'received'"
            )
            if left == 0:
                break
            await asyncio.sleep(0.5)
        result["left_received"] = left
    finally:
        await connection.close()


#: The traced runs: every span, and one in ten traces (OTEL_TRACES_SAMPLER).
TRACED = (
    ("scan+otlp", {}, (1, 8)),
    ("scan+otlp 10%", {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                       "OTEL_TRACES_SAMPLER_ARG": "0.1"}, (8,)),
)  # fmt: skip


def run_traced(args: argparse.Namespace, stack: Stack) -> list[dict]:
    """The same stack with its spans exported (OTLP/gRPC) to a sink in its own
    process, as to Jaeger: what tracing costs, in full and sampled."""
    runs = []
    for target, sampling, concurrencies in TRACED:
        runs += _traced(args, stack, target, sampling, concurrencies)
    # Untraced again, right after, on services restarted the same way: this machine's
    # speed drifts by a third within the hour, so the traced runs are compared with
    # this one, not with the first runs of the bench minutes before.
    for service in SERVICES:
        asyncio.run(stack.restart(service))
    result = loadgen("scan", stack.addr("scan"), duration=args.duration, concurrency=8)
    result["variant"] = "untraced_after_traced"
    print(describe(result), flush=True)
    return runs + [result]


def _traced(args: argparse.Namespace, stack: Stack, target: str, sampling: dict[str, str],
            concurrencies: tuple[int, ...]) -> list[dict]:  # fmt: skip
    port = free_port()
    counts = stack.workdir / "otlp-sink.json"
    counts.unlink(missing_ok=True)
    sink = subprocess.Popen(
        [sys.executable, "-m", "bench.otlp_sink", str(port), str(counts)], cwd=REPO
    )
    settings = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}", **sampling}
    runs = []
    try:
        stack.extra_env.update(settings)
        for service in SERVICES:
            asyncio.run(stack.restart(service))
        for concurrency in concurrencies:
            result = loadgen(
                "scan", stack.addr("scan"), duration=args.duration, concurrency=concurrency
            )
            result["target"] = target
            print(describe(result), flush=True)
            runs.append(result)
        for service in SERVICES:
            asyncio.run(stack.stop_service(service))  # flushes their spans
    finally:
        for name in settings:
            stack.extra_env.pop(name, None)
        stop_pid(sink.pid)
    if not counts.exists():
        raise RuntimeError(f"the OTLP sink wrote no counts ({counts}): spans per scan unknown")
    received = json.loads(counts.read_text())
    scans = sum(r["count"] + r["warmup"] for r in runs)
    for r in runs:
        r["spans_per_scan"] = round(received["spans"] / max(scans, 1), 1)
    print(
        f"{target}: the sink received {received['spans']} spans ({runs[0]['spans_per_scan']} per scan)"
    )
    return runs


def cpu_per_scan(
    before: dict[str, float], pids: dict[str, int], postmaster: int, result: dict
) -> dict:
    """CPU ms per scan answered over one run (warm-up included in both the
    CPU and the count; the CPU of refused calls is charged to the scans) of
    each service process, each service's Redis and Postgres; the
    services' total and the whole stack's. The load generator is not counted.
    (Postgres counts the backends alive at the end; a backend that exited
    during the run takes its CPU with it.)"""
    scans = max(result["accepted"] + result.get("warmup", 0), 1)  # refused calls are not scans
    now = {name: cpu_seconds(pid) for name, pid in pids.items()}
    now["postgres"] = postgres_cpu_seconds(postmaster)
    per = {name: round(1000 * (now[name] - before[name]) / scans, 3) for name in now}
    services = sum(per[name] for name in SERVICES)
    return {**per, "services_total": round(services, 3), "total": round(sum(per.values()), 3)}


def figures(scan_runs: list[dict], floor: list[dict]) -> dict:
    """The keyed figures a reader (and the issue tracker) looks for first."""

    def closed(runs: list[dict], n: int, target: str) -> dict:
        run = next(
            r
            for r in runs
            if r["mode"] == "closed" and r["concurrency"] == n and r["target"] == target
        )
        return {"per_s": run["rate_per_s"], "p50_ms": run["p50_ms"], "p99_ms": run["p99_ms"]}

    def overload(r: dict) -> dict:
        return {
            "offered_x": r["offered_x"],
            "offered_per_s": r["offered_rate"],
            "goodput_per_s": r["goodput_per_s"],
            "accepted_p50_ms": r["accepted_p50_ms"],
            "accepted_p99_ms": r["accepted_p99_ms"],
            "shed": r["shed"],
            "shed_p99_ms": r["shed_p99_ms"],
            "dropped": r["dropped"],
            "dropped_p99_ms": r["dropped_p99_ms"],
            "failed": r["errors"] - r["shed"] - r["dropped"],
            "shed_recorded": r["shed_recorded"],
            **({"pending_bound": r["pending_bound"]} if "pending_bound" in r else {}),
            **({"variant": r["variant"]} if "variant" in r else {}),
        }

    every = [r for r in scan_runs if r["target"] == "scan"]
    untraced = [r for r in every if "variant" not in r]

    def variant(name: str) -> list[dict]:
        return [r for r in every if r.get("variant") == name]

    return {
        "echo_1": closed(floor, 1, "echo"),
        "echo_8": closed(floor, 8, "echo")["per_s"],
        "echo_32": closed(floor, 32, "echo")["per_s"],
        "scan_1": closed(untraced, 1, "scan"),
        "scan_8": closed(untraced, 8, "scan"),
        "scan_32": closed(untraced, 32, "scan"),
        "scan_64": closed(untraced, 64, "scan"),
        "capacity_per_s": max(r["rate_per_s"] for r in untraced),
        "overload": [overload(r) for r in untraced if "offered_x" in r],
        "overload_pending_bound": [overload(r) for r in variant("pending_bound")],
        # The same, and 8 and 32 in flight, with scan on grpc.aio's accept loop alone.
        "without_acceptors": {
            "scan_8": closed(variant("no_acceptors"), 8, "scan"),
            "scan_32": closed(variant("no_acceptors"), 32, "scan"),
            "overload": [overload(r) for r in variant("no_acceptors") if "offered_x" in r],
            "cpu_ms_per_scan": next(
                (r["cpu_ms_per_scan"] for r in variant("no_acceptors") if r.get("cpu_ms_per_scan")),
                None,
            ),
        },
        "connections": {
            str(r["connections"]): {
                "offered_per_s": r["offered_rate"],
                "per_s": r["rate_per_s"],
                "p50_ms": r["p50_ms"],
                "p99_ms": r["p99_ms"],
            }
            for r in untraced
            if r.get("connections_run")
        },
        "cpu_ms_per_scan": next(r["cpu_ms_per_scan"] for r in untraced if r.get("cpu_ms_per_scan")),
        "traced_all_8": closed(scan_runs, 8, "scan+otlp"),
        "traced_sampled_8": closed(scan_runs, 8, "scan+otlp 10%"),
        "untraced_after_traced_8": closed(variant("untraced_after_traced"), 8, "scan"),
    }


def ratios(f: dict) -> dict:
    """The figures as the ratios #17's targets are written in (one run)."""
    by_x = {o["offered_x"]: o for o in f["overload"]}
    half = by_x[0.5]["accepted_p99_ms"]
    out = {
        "scan_8_over_echo_8": f["scan_8"]["per_s"] / f["echo_8"],
        "scan_32_over_echo_32": f["scan_32"]["per_s"] / f["echo_32"],
        "scan_1_p50_over_echo_1_p50": f["scan_1"]["p50_ms"] / f["echo_1"]["p50_ms"],
        "connections_100_p99_over_1_p99": f["connections"]["100"]["p99_ms"]
        / f["connections"]["1"]["p99_ms"],
        # Against the untraced run right after the traced ones (run_traced).
        "traced_all_over_untraced_8": f["traced_all_8"]["per_s"]
        / f["untraced_after_traced_8"]["per_s"],
        "traced_sampled_over_untraced_8": f["traced_sampled_8"]["per_s"]
        / f["untraced_after_traced_8"]["per_s"],
        "traced_all_over_first_scan_8": f["traced_all_8"]["per_s"] / f["scan_8"]["per_s"],
    }
    for x in (2.0, 4.0):
        out[f"goodput_{x:g}x_over_capacity"] = by_x[x]["goodput_per_s"] / f["capacity_per_s"]
        out[f"accepted_p99_{x:g}x_over_0.5x"] = by_x[x]["accepted_p99_ms"] / half
    for prefix, runs in (
        ("bounded", f["overload_pending_bound"]),
        ("no_acceptors", f["without_acceptors"]["overload"]),
    ):
        for o in runs:
            x = o["offered_x"]
            out[f"{prefix}_goodput_{x:g}x_over_capacity"] = o["goodput_per_s"] / f["capacity_per_s"]
            out[f"{prefix}_accepted_p99_{x:g}x_over_0.5x"] = o["accepted_p99_ms"] / half
            out[f"{prefix}_shed_p99_{x:g}x_ms"] = o["shed_p99_ms"]
    for x in (2.0, 4.0):
        out[f"shed_p99_{x:g}x_ms"] = by_x[x]["shed_p99_ms"]
    before = f["without_acceptors"]
    out["no_acceptors_scan_8_over_echo_8"] = before["scan_8"]["per_s"] / f["echo_8"]
    out["no_acceptors_scan_32_over_echo_32"] = before["scan_32"]["per_s"] / f["echo_32"]
    for label, _, _ in RESTARTS:  # #18: within 1.5x of steady state
        out[f"warm_start_{label}_p99_over_steady"] = f["warm_start"][label]["p99_x"]
    return {k: round(v, 3) for k, v in out.items()}


def run_echo_floor(args: argparse.Namespace, rate: float | None = None) -> list[dict]:
    """The bare echo: 1, 8 and 32 in flight (rate None), or open loop at `rate`."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "bench.echo_server", str(port)], cwd=REPO)
    try:
        time.sleep(1.0)
        runs = []
        loads = [{"rate": rate}] if rate else [{"concurrency": c} for c in (1, 8, 32)]
        for load in loads:
            result = loadgen("echo", f"127.0.0.1:{port}", duration=args.duration, **load)
            print(describe(result), flush=True)
            runs.append(result)
        return runs
    finally:
        stop_pid(server.pid)


def service_benches(quick: bool) -> dict:
    found = {}
    for name in ("geo", "score", "leaderboard"):
        if not (REPO / "bench" / f"{name}_bench.py").exists():
            continue
        print(f"\n== {name} read benchmarks ==", flush=True)
        command = [sys.executable, "-m", f"bench.{name}_bench"] + (["--quick"] if quick else [])
        done = subprocess.run(command, cwd=REPO, timeout=1800)
        path = RESULTS / f"{name}.json"
        if done.returncode == 0 and path.exists():
            found[name] = json.loads(path.read_text())
        else:
            found[name] = {"error": f"exit {done.returncode}"}
    return found


def write_reads(reads: dict, echo_8: float, machine_: dict, when: str) -> None:
    """bench/results/festival.json (+ festival.png) and watchers.json (#19)."""
    festival = {"when": when, "machine": machine_, "echo_8": echo_8, **reads["festival"],
                "tiles": reads["tiles"]}  # fmt: skip
    festival["requests_at_sustained_over_echo_8"] = round(
        festival["requests_per_s_at_sustained"] / echo_8, 4
    )
    (RESULTS / "festival.json").write_text(json.dumps(festival, indent=2))
    plot_festival(festival, RESULTS / "festival.png")
    watchers = {"when": when, "machine": machine_, "echo_8": echo_8, **reads["watchers"]}
    (RESULTS / "watchers.json").write_text(json.dumps(watchers, indent=2))
    print(f"festival: {festival['players_sustained']} players sustained, "
          f"{festival['requests_per_s_at_sustained']:.0f} requests/s = "
          f"{festival['requests_at_sustained_over_echo_8']:.3f} x echo_8", flush=True)  # fmt: skip


def reads_summary(reads: dict, echo_8: float) -> list[str]:
    """The festival, watcher and tile figures of summary.md (#19)."""
    fest, watch, tiles = reads["festival"], reads["watchers"], reads["tiles"]
    lines = [
        "",
        f"Festival mix ({', '.join(f'{k} {v:g}%' for k, v in fest['mix_percent'].items())}; "
        f"think time {fest['think_s']:g} s): {fest['players_sustained']} players sustained, "
        f"{fest['requests_per_s_at_sustained']:.0f} requests/s = "
        f"{fest['requests_per_s_at_sustained'] / echo_8:.3f} x echo_8; "
        f"{fest['players_per_stack_core']} players per core of the stack there.",
        "",
        "| players | requests /s | held | stack cores | " + " | ".join(
            f"{a} p99 ms (unloaded {u['p99_ms']:.1f})" for a, u in fest["unloaded"].items()
        ) + " |",
        "| --- | --- | --- | --- |" + " --- |" * len(fest["unloaded"]),
    ]  # fmt: skip
    for step in fest["steps"]:
        cells = [f"{step['rpcs'].get(a, {}).get('p99_ms', float('nan')):.1f}"
                 + (f" ({step['rpcs'][a]['errors']} errors)" if step["rpcs"].get(a, {}).get("errors") else "")
                 for a in fest["unloaded"]]  # fmt: skip
        lines.append(
            f"| {step['players']} | {step['requests_per_s']:.0f} | {'yes' if step['held'] else 'no'} | "
            f"{step['stack_cpu_cores']:.2f} | " + " | ".join(cells) + " |"
        )
    lines += [
        "",
        f"WatchTop: {watch['streams']} streams ({watch['opened']} opened) on one leaderboard process, "
        f"{watch['scan_rate_per_s']:g} scans/s: delay from a scan's answer to the board p50 "
        f"{watch['delay_p50_ms']:.0f} ms, p99 {watch['delay_p99_ms']:.0f} ms "
        f"(slow watchers p99 {watch['slow_delay']['p99_ms']:.0f} ms); the process used "
        f"{watch['cpu_cores']:.2f} cores, {watch['bytes_per_watcher'] / 1024:.1f} KiB per watcher, "
        f"{watch['board_reads_per_s']:.2f} board reads/s.",
        "",
        f"GetTile ({tiles['grid']}x{tiles['grid']} tiles of {tiles['tile_bytes']} B): "
        f"saturation before #19 taken as {tiles['saturation_before_per_s']:.0f}/s.",
        "",
        "| run | answered calls /s | p50 ms | p99 ms | p99 / 1-in-flight p99 | errors | geo CPU ms/tile | Postgres CPU ms/tile |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]  # fmt: skip
    for label, run in tiles.items():
        if not isinstance(run, dict):
            continue
        lines.append(
            f"| {label} | {run['rate_per_s']:.0f} | {run['p50_ms']:.2f} | {run['p99_ms']:.2f} | "
            f"{run.get('p99_over_1_in_flight_p99', '')} | {run['errors']} | "
            f"{run['geo_cpu_ms_per_tile']:.3f} | {run['postgres_cpu_ms_per_tile']:.3f} |"
        )
    return lines


def write_summary(report: dict, reads: dict) -> None:
    scan_runs, floor = report["scan"], report["floor"]
    unloaded = next(r for r in scan_runs if r["mode"] == "closed" and r["concurrency"] == 1)
    eight = next(r for r in scan_runs if r["mode"] == "closed" and r["concurrency"] == 8)
    echo8 = next(r for r in floor if r["mode"] == "closed" and r["concurrency"] == 8)
    lines = [
        f"# Benchmark results — {report['when']}",
        "",
        f"Machine: {report['machine']['cpu']}, {report['machine']['cores']} cores, "
        f"{report['machine']['memory_gib']} GiB, Python {report['machine']['python']}. Everything on this one machine.",
        "",
        "Steal: the share of the machine's CPU the hypervisor gave to other guests during"
        " the run (this is a shared VM; a run with much of it measured a slower machine).",
        "",
        "| run | load | achieved /s | p50 ms | p90 ms | p99 ms | p99.9 ms | errors | steal |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in scan_runs + floor:
        load = (
            f"open {r['offered_rate']:g}/s"
            if r["mode"] == "open"
            else f"{r['concurrency']} in flight"
        )
        if "variant" in r:
            load += f" ({r['variant']})"
        lines.append(
            f"| {r['target']} | {load} | {r['rate_per_s']:.1f} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | "
            f"{r['p99_ms']:.2f} | {r['p999_ms']:.2f} | {r['errors']} | {r.get('steal_pct', 0):.0f}% |"
        )
    lines += [
        "",
        f"SubmitScan unloaded p50: {unloaded['p50_ms']:.2f} ms. At 8 in flight: {eight['rate_per_s']:.0f} scans/s, "
        f"p99 {eight['p99_ms']:.1f} ms.",
        f"Floor (bare grpc.aio echo, 8 in flight): {echo8['rate_per_s']:.0f} calls/s; SubmitScan reaches "
        f"{eight['rate_per_s'] / echo8['rate_per_s']:.2%} of it (ratio {report['floor_ratio']:.3f}).",
    ]
    for target, _, _ in TRACED:
        traced = [r for r in scan_runs if r["target"] == target]
        if traced:
            lines.append(
                f"Spans exported to an OTLP sink ({target}, {traced[0]['spans_per_scan']} spans "
                "per scan): "
                + ", ".join(
                    f"{r['concurrency']} in flight {r['rate_per_s']:.0f}/s, p50 {r['p50_ms']:.1f} ms, "
                    f"p99 {r['p99_ms']:.1f} ms"
                    for r in traced
                )
                + "."
            )
    lines += [
        "",
        "Past capacity (open loop, multiples of the best rate reached):",
        "",
        "| offered | goodput /s | accepted p50 ms | accepted p99 ms | shed | shed p99 ms | dropped | dropped p99 ms | failed | shed or dropped, recorded |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for o in (
        report["overload"]
        + report["overload_pending_bound"]
        + report["without_acceptors"]["overload"]
    ):
        bound = {
            "pending_bound": f", SCAN_GRPC_MAX_PENDING={o.get('pending_bound')}",
            "no_acceptors": ", GRPC_ACCEPTORS=0",
        }.get(o.get("variant", ""), "")
        lines.append(
            f"| {o['offered_x']:g}x ({o['offered_per_s']:g}/s{bound}) | {o['goodput_per_s']:.1f} | "
            f"{o['accepted_p50_ms']:.2f} | {o['accepted_p99_ms']:.2f} | {o['shed']} | "
            f"{o['shed_p99_ms']:.2f} | {o['dropped']} | {o['dropped_p99_ms']:.2f} | {o['failed']} | "
            f"{o['shed_recorded']} |"
        )
    warm = report["warm_start"]
    lines += [
        "",
        f"Warm start: the first {warm['requests']} scans after every service restarted, open loop at "
        f"{warm['rate_per_s']:g}/s, in {warm['trials']} rounds; steady p99 (median of "
        f"{warm['trials']} sets) {warm['steady']['p99_ms']:.2f} ms, the sets' own p99s "
        + ", ".join(f"{s['p99_ms']:.2f}" for s in warm["steady"]["sets"])
        + " ms.",
        "",
        "| restart | p50 ms | p99 ms (median) | p99 / steady p99 | each round's | max ms | errors |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, _, _ in RESTARTS:
        w = warm[label]
        lines.append(
            f"| {label} | {w['p50_ms']:.2f} | {w['p99_ms']:.2f} | {w['p99_x']} | "
            f"{', '.join(map(str, w['trials_p99_x']))} | {w['max_ms']:.2f} | {w['errors']} |"
        )
    lines += reads_summary(reads, echo8["rate_per_s"])
    lines += ["", "Ratios: " + ", ".join(f"{k} {v}" for k, v in report["ratios"].items())]
    lines += [
        "",
        "![latency](latency.png)",
    ]
    for name, figures in report.get("services", {}).items():
        lines += ["", f"## {name}", "", "```", json.dumps(figures, indent=1)[:3000], "```"]
    (RESULTS / "summary.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per load step")
    parser.add_argument("--quick", action="store_true", help="short steps and small data sets")
    parser.add_argument(
        "--skip-services", action="store_true", help="only the SubmitScan and floor runs"
    )
    args = parser.parse_args()
    if args.quick:
        args.duration = 5.0
    RESULTS.mkdir(parents=True, exist_ok=True)
    admin_dsn, private = find_postgres(os.environ.get("PG_DSN", ""), REPO / ".run")
    try:
        print("== floor: bare grpc.aio echo ==", flush=True)
        floor = run_echo_floor(args)
        echo_8 = next(r["rate_per_s"] for r in floor if r.get("concurrency") == 8)
        print("\n== SubmitScan through the whole stack ==", flush=True)
        scan_runs, warm_start, reads = run_scan_bench(args, admin_dsn, echo_8)
        top = max(r["offered_rate"] for r in scan_runs if r["mode"] == "open")
        floor += run_echo_floor(args, top)
    finally:
        if private is not None:
            private.stop()
    eight = next(r for r in scan_runs if r["mode"] == "closed" and r["concurrency"] == 8)
    echo8 = next(r for r in floor if r["mode"] == "closed" and r["concurrency"] == 8)
    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "scan": scan_runs,
        "floor": floor,
        "floor_ratio": eight["rate_per_s"] / echo8["rate_per_s"],
        **figures(scan_runs, floor),
        "warm_start": warm_start,
        "services": {} if args.skip_services else service_benches(args.quick),
    }
    report["ratios"] = ratios(report)
    write_reads(reads, echo8["rate_per_s"], report["machine"], report["when"])
    plot(scan_runs + floor, RESULTS / "latency.png")
    for run in scan_runs + floor:
        run.pop("latencies_ms", None)
    (RESULTS / "scan.json").write_text(json.dumps(report, indent=2))
    write_summary(report, reads)
    print(f"\nfloor ratio (SubmitScan / echo at 8 in flight): {report['floor_ratio']:.3f}")
    print("ratios:", json.dumps(report["ratios"], indent=1))
    print(f"results: {RESULTS}/scan.json, summary.md, latency.png")


if __name__ == "__main__":
    main()
