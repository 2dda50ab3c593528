"""Geo service benchmark: GetTile at a fixed offered rate (open loop) on a
100x100-tile hunt, and CheckIn p50/p99 at 1 and 16 in flight.

Starts its own Postgres database, a Redis from services/geo/redis.conf and the
service in-process (uvloop; the load generator shares the process, so the
figures include the client's own cost). Open loop: requests leave on a fixed
schedule whatever the answers do, and each latency is measured from its
scheduled start (no coordinated omission).

Run: `.venv/bin/python -m bench.geo_bench [--quick]`; writes bench/results/geo.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import uvloop

from tools.inprocess import Geo, checkpoint_message, geo_service, hunt_message
from tools.localinfra import RedisServer, find_postgres, free_port, throwaway_database
from treasure.geo.v1 import geo_pb2

REPO = Path(__file__).resolve().parents[1]
RUN_DIR = REPO / ".run" / "bench"
RESULTS = REPO / "bench" / "results" / "geo.json"

GRID = 100
TILE_BYTES = 2048
CHECKPOINTS = 200
PLAYERS = 2000


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _summary(latencies: list[float], elapsed: float, errors: int = 0) -> dict[str, float]:
    return {
        "calls": len(latencies),
        "errors": errors,
        "per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(_percentile(latencies, 0.50) * 1000, 3),
        "p99_ms": round(_percentile(latencies, 0.99) * 1000, 3),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 3),
    }


async def _seed(geo: Geo, dsn: str) -> list[geo_pb2.Checkpoint]:
    now = datetime.now(UTC)
    await geo.admin.CreateHunt(
        geo_pb2.CreateHuntRequest(
            hunt=hunt_message(
                "bench", columns=GRID, rows=GRID, starts_at=now - timedelta(hours=1),
                ends_at=now + timedelta(days=1),
            )
        )
    )  # fmt: skip
    connection = await asyncpg.connect(dsn)
    try:  # 10 000 tiles straight into the table: the content system's bulk load
        await connection.execute(
            """INSERT INTO geo.hunt_tiles (hunt_id, x, y, version, content_type, data)
               SELECT 'bench', x, y, 1, 'image/png',
                      decode(repeat(md5(x || ':' || y), $1), 'hex')
               FROM generate_series(0, $2) x, generate_series(0, $2) y""",
            TILE_BYTES // 16,
            GRID - 1,
        )
    finally:
        await connection.close()
    refreshed = await geo.admin.RefreshTiles(geo_pb2.RefreshTilesRequest(hunt_id="bench"))
    assert refreshed.refreshed
    rng = random.Random(7)
    checkpoints = []
    for i in range(CHECKPOINTS):
        message = checkpoint_message(
            f"cp{i}", hunt_id="bench", tag_id=f"tag{i}",
            lat=38.70 + rng.uniform(0, 0.02), lon=-9.15 + rng.uniform(0, 0.03), radius_m=30,
        )  # fmt: skip
        reply = await geo.admin.UpsertCheckpoint(
            geo_pb2.UpsertCheckpointRequest(checkpoint=message)
        )
        checkpoints.append(reply.checkpoint)
    return checkpoints


async def _get_tiles_open_loop(geo: Geo, rate: float, seconds: float) -> dict[str, float]:
    rng = random.Random(11)
    latencies: list[float] = []
    errors = 0
    total = int(rate * seconds)
    interval = 1.0 / rate

    async def one(scheduled: float, x: int, y: int) -> None:
        nonlocal errors
        try:
            await geo.client.GetTile(geo_pb2.GetTileRequest(hunt_id="bench", x=x, y=y), timeout=5)
        except Exception:  # counted: the benchmark reports failures instead of dying
            errors += 1
            return
        latencies.append(time.perf_counter() - scheduled)

    tasks = []
    start = time.perf_counter()
    for i in range(total):
        scheduled = start + i * interval
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(
            asyncio.ensure_future(one(scheduled, rng.randrange(GRID), rng.randrange(GRID)))
        )
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    result = _summary(latencies, elapsed, errors)
    result["offered_per_s"] = rate
    return result


async def _check_ins(
    geo: Geo, checkpoints: list[geo_pb2.Checkpoint], in_flight: int, seconds: float
) -> dict[str, float]:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    run = uuid.uuid4().hex[:6]

    async def worker(w: int) -> None:
        rng = random.Random(w)
        while time.perf_counter() < deadline:
            cp = checkpoints[rng.randrange(len(checkpoints))]
            started = time.perf_counter()
            result = await geo.geo_client.check_in(
                hunt_id="bench",
                player_id=f"{run}-{rng.randrange(PLAYERS)}",
                tag_id=cp.tag_id,
                lat=cp.location.lat + rng.uniform(-0.0002, 0.0002),
                lon=cp.location.lon,
                accuracy_m=rng.uniform(3, 30),
                at=datetime.now(UTC),
            )
            latencies.append(time.perf_counter() - started)
            assert result.checkpoint_id == cp.checkpoint_id

    started = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(in_flight)))
    return _summary(latencies, time.perf_counter() - started)


async def run(quick: bool, admin_dsn: str) -> dict:
    database = f"geo_bench_{os.getpid()}"
    redis = RedisServer(
        REPO / "services" / "geo" / "redis.conf", free_port(), RUN_DIR / f"redis-geo-{os.getpid()}"
    ).start()
    try:
        async with (
            throwaway_database(admin_dsn, database) as dsn,
            geo_service(dsn, redis.url, GEO_METRICS_LISTEN="off") as geo,
        ):
            checkpoints = await _seed(geo, dsn)
            seconds = 4.0 if quick else 20.0
            results: dict[str, object] = {
                "quick": quick,
                "at": datetime.now(UTC).isoformat(timespec="seconds"),
                "cpus": os.cpu_count(),
                "setup": {
                    "tiles": GRID * GRID,
                    "tile_bytes": TILE_BYTES,
                    "checkpoints": CHECKPOINTS,
                    "players": PLAYERS,
                },
            }
            # Warm-up (connections, L1, Redis tag cache), not measured.
            await _check_ins(geo, checkpoints, 16, 1.0)
            for in_flight in (1, 16):
                results[f"check_in_{in_flight}_in_flight"] = await _check_ins(
                    geo, checkpoints, in_flight, seconds
                )
                print(
                    f"CheckIn, {in_flight} in flight: {results[f'check_in_{in_flight}_in_flight']}"
                )
            await _get_tiles_open_loop(geo, 300.0, 1.0)  # warm-up: pool connections, L1
            for rate in (500.0, 1000.0) if quick else (500.0, 1000.0, 2000.0):
                key = f"get_tile_open_loop_{int(rate)}_per_s"
                results[key] = await _get_tiles_open_loop(geo, rate, seconds)
                print(f"GetTile, offered {rate:g}/s: {results[key]}")
    finally:
        redis.stop()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(REPO)}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs (under a minute)")
    args = parser.parse_args()
    admin_dsn, private = find_postgres(os.environ.get("PG_DSN", ""), RUN_DIR)
    try:
        uvloop.run(run(args.quick, admin_dsn))
    finally:
        if private is not None:
            private.stop()


if __name__ == "__main__":
    main()
