"""Score service benchmark: Unlock throughput and p50/p99 at 1, 8 and 64 in
flight through gRPC, and GetScore from the hot tier vs cold (Redis flushed).

Starts its own Postgres database, a Redis from services/score/redis.conf, a
leaderboard double for the outbox relay, and the service in-process (uvloop).
Run: `.venv/bin/python -m bench.score_bench [--quick]`; writes
bench/results/score.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import redis.asyncio as aioredis
import uvloop

from tools.doubles import LeaderboardDouble
from tools.inprocess import score_client, score_service
from tools.localinfra import RedisServer, find_postgres, free_port, throwaway_database

REPO = Path(__file__).resolve().parents[1]
RUN_DIR = REPO / ".run" / "bench"
RESULTS = REPO / "bench" / "results" / "score.json"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _summary(latencies: list[float], elapsed: float) -> dict[str, float]:
    return {
        "calls": len(latencies),
        "per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(_percentile(latencies, 0.50) * 1000, 3),
        "p99_ms": round(_percentile(latencies, 0.99) * 1000, 3),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 3),
    }


async def _unlocks(client, in_flight: int, seconds: float, tag: str) -> dict[str, float]:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    at = datetime.now(UTC)

    async def worker(w: int) -> None:
        n = 0
        while time.perf_counter() < deadline:
            n += 1
            started = time.perf_counter()
            await client.unlock(
                scan_id=f"{tag}-{w}-{n}",
                hunt_id="bench",
                player_id=f"p{w}-{n % 500}",
                checkpoint_id=f"{tag}-cp{n}",
                points=10,
                first_finder_bonus=5,
                at=at,
            )
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(in_flight)))
    return _summary(latencies, time.perf_counter() - started)


async def _reads(client, players: list[str], in_flight: int, before=None) -> dict[str, float]:
    latencies: list[float] = []
    queue = list(players)

    async def worker() -> None:
        while queue:
            player = queue.pop()
            started = time.perf_counter()
            await client.get_score("bench", player)
            latencies.append(time.perf_counter() - started)

    if before is not None:
        await before()
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return _summary(latencies, time.perf_counter() - started)


async def run(quick: bool, admin_dsn: str) -> dict:
    seconds = 3.0 if quick else 15.0
    database = f"thbench_{uuid.uuid4().hex[:8]}"
    redis_server = RedisServer(
        REPO / "services" / "score" / "redis.conf", free_port(), RUN_DIR / f"redis-{os.getpid()}"
    ).start()
    leaderboard = await LeaderboardDouble().start()
    results: dict = {"quick": quick, "seconds_per_step": seconds, "unlock": {}, "get_score": {}}
    try:
        async with (
            throwaway_database(admin_dsn, database) as dsn,
            score_service(
                dsn,
                redis_server.url,
                leaderboard.address,
                SCORE_METRICS_LISTEN="off",
                LOG_LEVEL="WARNING",
            ) as runtime,
            score_client(runtime.port) as client,
        ):
            await _unlocks(client, 8, 0.5, "warm")
            for in_flight in (1, 8, 64):
                results["unlock"][f"in_flight_{in_flight}"] = await _unlocks(
                    client, in_flight, seconds, f"u{in_flight}"
                )
                print(
                    f"Unlock  in flight {in_flight:>2}: {results['unlock'][f'in_flight_{in_flight}']}"
                )
            players = [f"p{w}-{n}" for w in range(8) for n in range(500)]
            redis = aioredis.Redis.from_url(redis_server.url)
            try:
                await _reads(client, players, 8)  # fill
                rounds = 2 if quick else 5
                hot, cold = [], []
                for _ in range(rounds):
                    hot.append(await _reads(client, players, 8))
                    cold.append(await _reads(client, players, 8, before=redis.flushall))
            finally:
                await redis.aclose()
            for name, runs in (("hot", hot), ("cold_redis_flushed", cold)):
                results["get_score"][name] = {
                    key: round(statistics.median(r[key] for r in runs), 3) for key in runs[0]
                }
                print(f"GetScore {name:>18}: {results['get_score'][name]}")
            await asyncio.sleep(0.3)  # let the relay drain
            results["outbox_rows_delivered"] = sum(len(b) for b in leaderboard.servicer.batches)
            results["hot_tier_errors"] = {
                op: runtime.metrics.registry.get_sample_value(
                    "score_hot_tier_errors_total", {"op": op}
                )
                or 0
                for op in ("write", "repair", "read", "fill")
            }
            print(f"hot-tier errors (5 ms deadline): {results['hot_tier_errors']}")
    finally:
        await leaderboard.stop()
        redis_server.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short steps (under a minute)")
    args = parser.parse_args()
    admin_dsn, private = find_postgres(os.environ.get("PG_DSN", ""), REPO / ".run" / "test")
    try:
        results = uvloop.run(run(args.quick, admin_dsn))
    finally:
        if private is not None:
            private.stop()
    results["at"] = datetime.now(UTC).isoformat(timespec="seconds")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
