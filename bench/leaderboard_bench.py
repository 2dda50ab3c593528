"""Leaderboard benchmark: `python -m bench.leaderboard_bench [--quick] [--players N]`.

On one board of N players (1,000,000; --quick: 100,000) it measures, in one run:
- the rebuild of the board from StreamScores (a ScoreService double in this
  process serving pre-serialized pages), through `RebuildBoard`;
- GetRank and GetTop (top 10, L1-cached, and a deep page from a page token,
  which misses the cache) p50/p99 through gRPC, sequential calls;
- SubmitScores throughput (batches of 500 newer totals);
- the same two questions answered by Postgres from a throwaway table with an
  index: rank as `count(*)` of better rows, and the top 10 by the index.

It starts its own Redis from services/leaderboard/redis.conf (maxmemory raised
for the board and its rebuild copy) and a throwaway Postgres database (PG_DSN,
else 127.0.0.1:5432, else a private cluster under .run/bench), and the service
in process. Prints the figures and writes bench/results/leaderboard.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import grpc

from libs import paging
from services.leaderboard.__main__ import running
from services.leaderboard.config import LeaderboardConfig
from tools.localinfra import RedisServer, create_database, drop_database, find_postgres, free_port
from treasure.geo.v1 import geo_pb2
from treasure.leaderboard.v1 import leaderboard_pb2 as lb_pb
from treasure.leaderboard.v1 import leaderboard_pb2_grpc as lb_grpc
from treasure.score.v1 import score_pb2

REPO = Path(__file__).resolve().parents[1]
RUN = REPO / ".run" / "bench"
RESULTS = REPO / "bench" / "results" / "leaderboard.json"
HUNT = "bench-hunt"
PAGE = 2000
CLIENT, SERVICE, ADMIN = "bench-client", "bench-service", "bench-admin"


def make_board(players: int, seed: int = 7) -> tuple[list[str], list[int], list[int]]:
    """Player ids (sorted), totals (many ties) and reached_at ms over 30 days."""
    rng = random.Random(seed)
    start = int(time.time() * 1000) - 30 * 86_400_000
    ids = [f"player-{i:07d}" for i in range(players)]
    totals = [int(rng.paretovariate(1.3) * 50) for _ in range(players)]
    reached = [start + rng.randrange(30 * 86_400_000) for _ in range(players)]
    return ids, totals, reached


def serialized_pages(ids: list[str], totals: list[int], reached: list[int]) -> list[bytes]:
    pages = []
    for lo in range(0, len(ids), PAGE):
        message = score_pb2.StreamScoresResponse()
        for i in range(lo, min(lo + PAGE, len(ids))):
            total = message.totals.add(player_id=ids[i], total_points=totals[i], version=1)
            total.reached_at.FromMilliseconds(reached[i])
        pages.append(message.SerializeToString())
    return pages


def score_double(pages: list[bytes]) -> grpc.GenericRpcHandler:
    """A ScoreService that streams the pre-serialized pages."""

    async def stream_scores(_request, _context):
        for page in pages:
            yield page

    handler = grpc.unary_stream_rpc_method_handler(
        stream_scores,
        request_deserializer=score_pb2.StreamScoresRequest.FromString,
        response_serializer=lambda raw: raw,
    )
    return grpc.method_handlers_generic_handler(
        "treasure.score.v1.ScoreService", {"StreamScores": handler}
    )


def catalog_double(hunt_id: str) -> grpc.GenericRpcHandler:
    """A GeoService whose catalog holds one hunt (GetHunt only)."""

    async def get_hunt(request, context):
        if request.hunt_id != hunt_id:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"hunt {request.hunt_id} not found")
        return geo_pb2.GetHuntResponse(hunt=geo_pb2.Hunt(hunt_id=hunt_id))

    handler = grpc.unary_unary_rpc_method_handler(
        get_hunt,
        request_deserializer=geo_pb2.GetHuntRequest.FromString,
        response_serializer=geo_pb2.GetHuntResponse.SerializeToString,
    )
    return grpc.method_handlers_generic_handler("treasure.geo.v1.GeoService", {"GetHunt": handler})


def percentiles(samples_s: list[float]) -> dict[str, float]:
    ordered = sorted(samples_s)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 3),
        "samples": len(ordered),
    }


async def timed(call: Callable[[int], Awaitable[object]], n: int) -> dict[str, float]:
    for i in range(min(50, n)):  # warm up
        await call(i)
    samples = []
    for i in range(n):
        started = time.perf_counter()
        await call(i)
        samples.append(time.perf_counter() - started)
    return percentiles(samples)


async def postgres_figures(
    ids: list[str], totals: list[int], reached: list[int], samples: int
) -> dict[str, object]:
    # off the loop (it probes with asyncio.run); a port of its own, so a test
    # session's private Postgres is never the one this bench stops
    admin_dsn, private = await asyncio.to_thread(
        find_postgres, os.environ.get("PG_DSN", ""), RUN, 55433
    )
    name = f"lbbench_{os.getpid()}"
    dsn = await create_database(admin_dsn, name)
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(
            "CREATE TABLE scores (hunt_id text, player_id text, total bigint,"
            " reached_at timestamptz, PRIMARY KEY (hunt_id, player_id))"
        )
        rows = [
            (HUNT, p, t, datetime.fromtimestamp(ms / 1000, UTC))
            for p, t, ms in zip(ids, totals, reached, strict=True)
        ]
        started = time.perf_counter()
        await connection.copy_records_to_table("scores", records=rows)
        await connection.execute(
            "CREATE INDEX scores_rank ON scores (hunt_id, total DESC, reached_at, player_id)"
        )
        await connection.execute("ANALYZE scores")
        load_s = time.perf_counter() - started
        rank_sql = (
            "SELECT count(*) + 1 FROM scores WHERE hunt_id = $1 AND (total > $2 OR (total = $2"
            " AND (reached_at, player_id) < ($3, $4)))"
        )
        top_sql = (
            "SELECT player_id, total, reached_at FROM scores WHERE hunt_id = $1"
            " ORDER BY total DESC, reached_at, player_id LIMIT 10"
        )
        rank_stmt = await connection.prepare(rank_sql)
        top_stmt = await connection.prepare(top_sql)
        rng = random.Random(3)
        picks = [rng.randrange(len(ids)) for _ in range(samples)]

        async def rank(i: int) -> None:
            j = picks[i % len(picks)]
            await rank_stmt.fetchval(HUNT, totals[j], rows[j][3], ids[j])

        async def top(_i: int) -> None:
            await top_stmt.fetch(HUNT)

        return {
            "load_and_index_s": round(load_s, 2),
            "rank_count_star": await timed(rank, samples),
            "top10_index": await timed(top, max(samples, 1000)),
        }
    finally:
        await connection.close()
        await drop_database(admin_dsn, name)
        if private is not None:
            private.stop()


async def leaderboard_figures(
    ids: list[str], totals: list[int], reached: list[int], samples: int, redis_url: str
) -> dict[str, object]:
    pages = serialized_pages(ids, totals, reached)
    double = grpc.aio.server()
    double.add_generic_rpc_handlers((score_double(pages), catalog_double(HUNT)))
    score_port = double.add_insecure_port("127.0.0.1:0")
    await double.start()
    config = LeaderboardConfig.from_env(
        {
            "LEADERBOARD_REDIS_URL": redis_url,
            "SCORE_SERVICE_ADDR": f"127.0.0.1:{score_port}",
            "GEO_SERVICE_ADDR": f"127.0.0.1:{score_port}",
            "LEADERBOARD_GRPC_LISTEN": "127.0.0.1:0",
            "LEADERBOARD_METRICS_LISTEN": "off",
            "LEADERBOARD_RECONCILE_S": "0",
            "LEADERBOARD_REBUILD_PAGE_SIZE": str(PAGE),
            "AUTH_CLIENT_TOKENS": CLIENT,
            "AUTH_SERVICE_TOKENS": SERVICE,
            "AUTH_ADMIN_TOKENS": ADMIN,
            "AUTH_PEER_TOKEN": SERVICE,
            "LOG_LEVEL": "WARNING",
        }
    )
    figures: dict[str, object] = {}
    try:
        async with running(config) as runtime:
            channel = grpc.aio.insecure_channel(f"127.0.0.1:{runtime.port}")
            stub = lb_grpc.LeaderboardServiceStub(channel)
            client = (("authorization", f"Bearer {CLIENT}"),)
            started = time.perf_counter()
            reply = await stub.RebuildBoard(
                lb_pb.RebuildBoardRequest(hunt_id=HUNT),
                metadata=(("authorization", f"Bearer {ADMIN}"),),
                timeout=900,
            )
            wall = time.perf_counter() - started
            assert reply.player_count == len(ids), reply
            figures["rebuild"] = {
                "players": reply.player_count,
                "took_s": round(reply.took.ToNanoseconds() / 1e9, 3),
                "wall_s": round(wall, 3),
                "players_per_s": round(len(ids) / wall),
            }
            rng = random.Random(11)
            picks = [rng.randrange(len(ids)) for _ in range(samples)]

            async def rank(i: int) -> None:
                await stub.GetRank(
                    lb_pb.GetRankRequest(hunt_id=HUNT, player_id=ids[picks[i % samples]]),
                    metadata=client,
                )

            async def top(_i: int) -> None:
                await stub.GetTop(lb_pb.GetTopRequest(hunt_id=HUNT, limit=10), metadata=client)

            tokens = [paging.encode({"t": totals[j], "r": reached[j], "p": ids[j]}) for j in picks]

            async def deep(i: int) -> None:
                await stub.GetTop(
                    lb_pb.GetTopRequest(hunt_id=HUNT, limit=10, page_token=tokens[i % samples]),
                    metadata=client,
                )

            async def around(i: int) -> None:
                await stub.GetAround(
                    lb_pb.GetAroundRequest(hunt_id=HUNT, player_id=ids[picks[i % samples]], n=5),
                    metadata=client,
                )

            figures["get_rank"] = await timed(rank, samples)
            figures["get_top10_cached"] = await timed(top, samples)
            figures["get_top10_deep_page_uncached"] = await timed(deep, samples)
            figures["get_around_5"] = await timed(around, samples)

            service = (("authorization", f"Bearer {SERVICE}"),)
            batches = []
            for b in range(20):
                request = lb_pb.SubmitScoresRequest()
                for j in rng.sample(range(len(ids)), 500):
                    u = request.updates.add(
                        hunt_id=HUNT, player_id=ids[j], total_points=totals[j] + 1, version=2 + b
                    )
                    u.reached_at.FromMilliseconds(reached[j] + 1)
                batches.append(request)
            started = time.perf_counter()
            latencies = []
            for request in batches:
                t0 = time.perf_counter()
                await stub.SubmitScores(request, metadata=service)
                latencies.append(time.perf_counter() - t0)
            figures["submit_500_per_batch"] = {
                **percentiles(latencies),
                "updates_per_s": round(len(batches) * 500 / (time.perf_counter() - started)),
            }
            await channel.close()
    finally:
        await double.stop(0)
    return figures


async def main_async(players: int, samples: int, pg_samples: int) -> dict[str, object]:
    print(f"leaderboard bench: {players:,} players")
    ids, totals, reached = make_board(players)
    redis = RedisServer(
        REPO / "services" / "leaderboard" / "redis.conf",
        free_port(),
        RUN / f"redis-leaderboard-{os.getpid()}",
        extra_args=("--maxmemory", "4gb"),
    ).start()
    try:
        board = await leaderboard_figures(ids, totals, reached, samples, redis.url)
    finally:
        redis.stop()
    postgres = await postgres_figures(ids, totals, reached, pg_samples)
    return {
        "players": players,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "leaderboard_grpc": board,
        "postgres": postgres,
        "note": "sequential calls from a client in the same process as the service",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100,000 players, fewer samples")
    parser.add_argument("--players", type=int, default=0)
    args = parser.parse_args()
    players = args.players or (100_000 if args.quick else 1_000_000)
    samples = 1000 if args.quick else 5000
    pg_samples = 100 if args.quick else 200
    result = asyncio.run(main_async(players, samples, pg_samples))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"written to {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
