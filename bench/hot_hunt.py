"""How much of one Redis master a single busy hunt takes, on Redis Cluster.

The key schema spreads per-player state over every master (hash tags by
player, or hunt and player); only the per-hunt keys (the leaderboard's board,
the geo sets) sit in one slot, so one master. This measures what that costs
under the demo's load:

1. a private stack, each service on its own 3-master Redis Cluster
   (tools/stack.py `Stack` with `cluster`; every port free);
2. the demo hunt imported, then the demo's simulated festival (tools/demo.py,
   in its own process) playing that one hunt;
3. before and after, on every master of every service's cluster: INFO
   commandstats (calls per command, admin commands left out) and INFO cpu;
4. during the load, MONITOR on the master that owns the hunt's slot: which
   of its clients' commands touched the hunt's keys;
5. the hunt's keys as they are at the end (type, size, MEMORY USAGE).

Per service: the share of the commands (and of Redis CPU) the hottest master
took (a perfect spread over 3 masters is 33%), which master owns the hunt's
slot, and the hot per-hunt keys. Writes bench/results/hot_hunt.json and .md.

    .venv/bin/python -m bench.hot_hunt [--players 1000] [--duration 60]
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import contextlib
import json
import os
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import redis.asyncio as aioredis
from redis.crc import key_slot
from redis.exceptions import RedisError

from bench.run import HUNT_FILE, import_hunt
from tools.huntctl import load_hunt_file
from tools.localinfra import RedisCluster, find_postgres, free_port, throwaway_database
from tools.stack import Stack

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
SERVICES = ("scan", "score", "leaderboard", "geo")
#: Commands of operators, clients' handshakes and the services' own probes
#: (health PING, the memory gauge's INFO): not the load under study.
ADMIN = {"info", "ping", "config", "cluster", "client", "command", "hello", "monitor",
         "memory", "dbsize", "script", "select", "readonly", "scan", "type", "latency"}  # fmt: skip


def _node_client(port: int) -> aioredis.Redis:
    return aioredis.Redis(host="127.0.0.1", port=port, decode_responses=True, socket_timeout=10)


async def snapshot(stack_redis: dict[str, RedisCluster]) -> dict[str, dict[int, dict]]:
    """Per service, per master port: data-command calls by command, and CPU seconds."""
    result: dict[str, dict[int, dict]] = {}
    for service, cluster in stack_redis.items():
        result[service] = {}
        for node in cluster.nodes:
            client = _node_client(node.port)
            try:
                stats = await client.info("commandstats")
                cpu = await client.info("cpu")
            finally:
                await client.aclose()
            calls = {
                name.removeprefix("cmdstat_"): int(value["calls"])
                for name, value in stats.items()
                if name.removeprefix("cmdstat_").split("|")[0] not in ADMIN
            }
            result[service][node.port] = {
                "calls": calls,
                "cpu_s": float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]),
            }
    return result


def delta(before: dict, after: dict) -> dict[str, dict[int, dict]]:
    out: dict[str, dict[int, dict]] = {}
    for service, nodes in after.items():
        out[service] = {}
        for port, now in nodes.items():
            then = before[service][port]
            calls = {
                name: n - then["calls"].get(name, 0)
                for name, n in now["calls"].items()
                if n - then["calls"].get(name, 0) > 0
            }
            out[service][port] = {
                "calls": dict(sorted(calls.items(), key=lambda kv: -kv[1])),
                "commands": sum(calls.values()),
                "cpu_s": round(now["cpu_s"] - then["cpu_s"], 3),
            }
    return out


async def owner_port(cluster: RedisCluster, hunt_id: str) -> int:
    """The port of the master that serves the hunt's hash tag."""
    slot = key_slot(f"{{{hunt_id}}}".encode())
    client = _node_client(cluster.nodes[0].port)
    try:
        for start, end, primary, *_replicas in await client.execute_command("CLUSTER", "SLOTS"):
            if int(start) <= slot <= int(end):
                return int(primary[1])
    finally:
        await client.aclose()
    raise RuntimeError(f"slot {slot} is served by no master")


class Monitor:
    """MONITOR on one master while the load runs: its clients' commands (not
    those run inside scripts), and how many touched a key of the hunt."""

    def __init__(self, port: int, hunt_id: str) -> None:
        self.port = port
        self.tag = f"{{{hunt_id}}}"
        self.counts: dict = {
            "commands": 0, "hunt_key_commands": 0, "by_command": {}, "hunt_by_command": {}
        }  # fmt: skip
        self._client = _node_client(port)
        self._task: asyncio.Future | None = None
        self._started = 0.0

    async def _listen(self, ready: asyncio.Event) -> None:
        counts = self.counts
        async with self._client.monitor() as monitor:
            ready.set()
            async for command in monitor.listen():
                if command["client_type"] == "lua":
                    continue
                name = command["command"].split(" ")[0].lower()
                if name in ADMIN:
                    continue
                counts["commands"] += 1
                counts["by_command"][name] = counts["by_command"].get(name, 0) + 1
                if self.tag in command["command"]:
                    counts["hunt_key_commands"] += 1
                    counts["hunt_by_command"][name] = counts["hunt_by_command"].get(name, 0) + 1

    async def start(self) -> Monitor:
        ready = asyncio.Event()
        self._task = asyncio.ensure_future(self._listen(ready))
        await asyncio.wait_for(ready.wait(), 10)
        self._started = time.monotonic()
        return self

    async def stop(self) -> dict:
        assert self._task is not None
        await asyncio.sleep(0.2)  # the last commands' lines
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        with contextlib.suppress(RedisError, OSError):  # the MONITOR connection is done for
            await self._client.aclose()
        self.counts["seconds"] = round(time.monotonic() - self._started, 1)
        return self.counts


async def hunt_keys(port: int, hunt_id: str) -> list[dict]:
    """The keys of the hunt's hash tag on its master, with type, size and bytes."""
    client = _node_client(port)
    found = []
    try:
        async for key in client.scan_iter(match=f"*{{{hunt_id}}}*", count=1000):
            kind = await client.type(key)
            size = {
                "zset": client.zcard,
                "hash": client.hlen,
                "string": client.strlen,
                "set": client.scard,
                "list": client.llen,
            }.get(kind)
            found.append(
                {
                    "key": key,
                    "type": kind,
                    "size": int(await size(key)) if size else None,
                    "memory_usage_bytes": int(await client.memory_usage(key, samples=0) or 0),
                }
            )
    finally:
        await client.aclose()
    return sorted(found, key=lambda k: -k["memory_usage_bytes"])


async def run_demo(stack, players: int, duration: float, log_path: Path) -> dict:
    """tools/demo.py against the stack, in its own process; its summary."""
    command = [
        sys.executable, "-m", "tools.demo", "--players", str(players), "--duration", str(duration),
        "--scan-addr", stack.addr("scan"), "--geo-addr", stack.addr("geo"),
        "--leaderboard-addr", stack.addr("leaderboard"),
    ]  # fmt: skip
    with log_path.open("w") as log:
        process = await asyncio.create_subprocess_exec(
            *command, cwd=REPO, stdout=log, stderr=asyncio.subprocess.STDOUT
        )
        code = await process.wait()
    text = await asyncio.to_thread(log_path.read_text, errors="replace")
    if code != 0:
        raise RuntimeError(f"the demo failed ({code}): {text[-2000:]}")
    summary = next(
        (line for line in reversed(text.splitlines()) if line.startswith("summary:")), ""
    )
    return ast.literal_eval(summary.removeprefix("summary:").strip()) if summary else {}


def analyse(moved: dict, owners: dict[str, int], samples: dict, keys_: dict) -> dict:
    services = {}
    for service, nodes in moved.items():
        total = sum(n["commands"] for n in nodes.values())
        cpu = sum(n["cpu_s"] for n in nodes.values())
        hottest = max(nodes, key=lambda p: nodes[p]["commands"])
        sample = samples[service]
        services[service] = {
            "commands": total,
            "per_master": {
                str(port): {
                    "commands": n["commands"],
                    "share": round(n["commands"] / total, 4) if total else 0.0,
                    "cpu_s": n["cpu_s"],
                    "cpu_share": round(n["cpu_s"] / cpu, 4) if cpu else 0.0,
                    "owns_hunt_slot": port == owners[service],
                    "top_commands": dict(list(n["calls"].items())[:6]),
                }
                for port, n in nodes.items()
            },
            "hottest_master": str(hottest),
            "hottest_share": round(nodes[hottest]["commands"] / total, 4) if total else 0.0,
            "hottest_owns_hunt_slot": hottest == owners[service],
            "hunt_slot_master": str(owners[service]),
            "hunt_slot_master_share": (
                round(nodes[owners[service]]["commands"] / total, 4) if total else 0.0
            ),
            "monitor_on_hunt_slot_master": sample,
            "hunt_key_share_of_that_master": (
                round(sample["hunt_key_commands"] / sample["commands"], 4)
                if sample["commands"]
                else 0.0
            ),
            "hot_keys": keys_[service],
        }
    return services


def write_results(report: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "hot_hunt.json").write_text(json.dumps(report, indent=2) + "\n")
    load = report["load"]
    lines = [
        f"# One hot hunt on Redis Cluster — {report['when']}",
        "",
        f"Hunt `{report['hunt_id']}` (hash slot {report['hunt_slot']}), the demo's festival: "
        f"{load['players']} players for {load['duration_s']:g} s, {load['scans']} scans "
        f"({load['scans_per_s']:.1f}/s). Each service on its own 3-master cluster; commands "
        "are INFO commandstats deltas per master (inner commands of scripts included, admin "
        "commands left out). A perfect spread is 33% per master. MONITOR ran on the master "
        "that owns the hunt's slot for the whole run (its clients' commands, not scripts' "
        "inner ones); Redis CPU per master is in the JSON (at this load mostly idle cron, "
        "and MONITOR inflates it on the watched master).",
        "",
        "| service | commands | hottest master's share | owns the hunt's slot | "
        "commands on the hunt's master that touched the hunt's keys (MONITOR) | "
        "hot per-hunt keys at the end |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for service, s in report["services"].items():
        keys_ = ", ".join(
            f"`{k['key']}` ({k['type']}, {k['size']}, {k['memory_usage_bytes']} B)"
            for k in s["hot_keys"][:4]
        )
        more = len(s["hot_keys"]) - 4
        keys_ += f" and {more} more" if more > 0 else ""
        lines.append(
            f"| {service} | {s['commands']} | {s['hottest_share']:.1%} | "
            f"{'yes' if s['hottest_owns_hunt_slot'] else 'no'} | "
            f"{s['hunt_key_share_of_that_master']:.1%} of "
            f"{s['monitor_on_hunt_slot_master']['commands']} | {keys_ or 'none'} |"
        )
    lines += ["", "Per master (commands, share; the hunt's slot):", ""]
    for service, s in report["services"].items():
        cells = [
            f"{port}: {n['commands']} ({n['share']:.1%})"
            + (" ← hunt slot" if n["owns_hunt_slot"] else "")
            for port, n in s["per_master"].items()
        ]
        lines.append(f"- {service}: " + "; ".join(cells))
    (RESULTS / "hot_hunt.md").write_text("\n".join(lines) + "\n")


async def main_async(args: argparse.Namespace, admin_dsn: str, run_dir: Path) -> dict:
    hunt, _checkpoints, _tiles = load_hunt_file(HUNT_FILE)
    database = f"thbench_hot_{os.getpid()}"
    async with throwaway_database(admin_dsn, database) as dsn:
        # Each service on one 3-master Redis Cluster of its own.
        stack = Stack(
            run_dir / "stack", dsn, cluster=True, LOG_LEVEL="WARNING", SCAN_RATE_LIMIT="100"
        )
        try:
            await stack.start()
            clusters = {name: stack.redis[name] for name in SERVICES}
            owners = {name: await owner_port(c, hunt.hunt_id) for name, c in clusters.items()}
            with contextlib.redirect_stdout(sys.stderr):  # stdout is this tool's JSON
                await import_hunt(stack)
            monitors = {s: await Monitor(owners[s], hunt.hunt_id).start() for s in SERVICES}
            before = await snapshot(clusters)
            started = time.monotonic()
            summary = await run_demo(stack, args.players, args.duration, run_dir / "demo.log")
            elapsed = time.monotonic() - started
            after = await snapshot(clusters)
            samples = {s: await monitor.stop() for s, monitor in monitors.items()}
            keys_ = {s: await hunt_keys(owners[s], hunt.hunt_id) for s in SERVICES}
        finally:
            await stack.stop()
    scans = int(summary.get("count", 0))
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "hunt_id": hunt.hunt_id,
        "hunt_slot": key_slot(f"{{{hunt.hunt_id}}}".encode()),
        "load": {
            "tool": "tools/demo.py",
            "players": args.players,
            "duration_s": args.duration,
            "scans": scans,
            "scans_per_s": scans / elapsed if elapsed else 0.0,
            "demo_summary": summary,
        },
        "services": analyse(delta(before, after), owners, samples, keys_),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.hot_hunt", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--players", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of festival")
    args = parser.parse_args()
    run_dir = REPO / ".run" / f"hot-hunt-{os.getpid()}"
    # Postgres: PG_DSN, else the local server, else a private one on a free port.
    admin_dsn, private = find_postgres(os.environ.get("PG_DSN", ""), run_dir, port=free_port())
    try:
        report = asyncio.run(main_async(args, admin_dsn, run_dir))
    finally:
        if private is not None:
            private.stop()
        shutil.rmtree(run_dir, ignore_errors=True)
    write_results(report)
    for service, s in report["services"].items():
        print(
            f"{service:<12} hottest master {s['hottest_share']:.1%} of {s['commands']} commands"
            f" (owns the hunt's slot: {s['hottest_owns_hunt_slot']}); hunt keys "
            f"{s['hunt_key_share_of_that_master']:.1%} of that master's client commands"
        )
    print(f"results: {RESULTS}/hot_hunt.json, hot_hunt.md")


if __name__ == "__main__":
    main()
