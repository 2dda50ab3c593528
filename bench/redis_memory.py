"""Memory sizing: bytes per player and per checkpoint in each service's Redis.

For each service, a private standalone Redis from services/<svc>/redis.conf
(tools.localinfra.RedisServer on a free port) is filled through the service's
own cache code (services/<svc>/cache.py write paths), with the demo hunt's
checkpoints (demo/lisbon.yaml, 33) and N players (default 100,000):

- scan: `ScanCache.admit` + `finish` per scan: the rate bucket, the last
  position and one idempotency answer (24 h) per scan; every player scans
  once, a sample of them all 33 checkpoints;
- score: `HotTier.fill_progress`: the score hash and the checkpoint hash of
  every player with all 33 checkpoints, a sample with one;
- leaderboard: one board of N players built by the rebuild path
  (`BoardStore.begin_build` / `write_page` / `finish_build`), then a second
  rebuild held just before its swap (two boards, the peak), and a small board;
- geo: the catalog (`put_catalog`, `store_checkpoints`), then one sighting per
  player (`GeoCache.record`: last location and the live bucket), a sample seen
  again in the next bucket.

Each phase is measured twice: the used_memory delta (INFO memory: what
maxmemory counts, with the keyspace's own overhead) divided by what the phase
wrote, and `MEMORY USAGE key SAMPLES 0` on a sample of the keys it wrote.

Two things differ from production, neither changes a key's size: maxmemory is
lifted for the fill (nothing may be evicted while measuring; evicted_keys is
checked to stay 0), and TTLs are lengthened (and sightings dated a few
minutes ahead) so no key expires before it is measured. Writes
bench/results/redis_memory.json and .md.

    .venv/bin/python -m bench.redis_memory [--players 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import random
import shutil
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from libs import rediskit
from libs.metrics import Metrics
from services.geo import keys as geo_keys
from services.geo.cache import GeoCache, Versioned
from services.geo.model import LIVE_WINDOW_S, Checkpoint, CheckpointSet, Grid, Hunt, HuntStatus
from services.geo.model import Sighting as GeoSighting
from services.leaderboard import keys as lb_keys
from services.leaderboard.cache import BoardStore
from services.leaderboard.model import Update
from services.scan import keys as scan_keys
from services.scan.cache import ScanCache
from services.scan.model import Answer, Outcome, Position, ScanInput, Status, new_scan_id
from services.score import keys as score_keys
from services.score.cache import HotTier
from services.score.model import Progress, Score, UnlockedCheckpoint
from tools.huntctl import load_hunt_file
from tools.localinfra import RedisServer, free_port

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
HUNT_FILE = REPO / "demo" / "lisbon.yaml"
#: Concurrent writes (rediskit pools 64 connections).
IN_FLIGHT = 48
#: Keys per kind measured with MEMORY USAGE.
SAMPLE_KEYS = 500
LONG_TTL_S = 6 * 3600
GEO_LIVE_BUCKET_S = 20  # GEO_LIVE_BUCKET_S's default


async def bounded(calls: Iterable[Callable[[], Awaitable[object]]], limit: int = IN_FLIGHT) -> None:
    slots = asyncio.Semaphore(limit)

    async def one(call: Callable[[], Awaitable[object]]) -> None:
        async with slots:
            await call()

    await asyncio.gather(*(one(call) for call in calls))


class Probe:
    """used_memory deltas and MEMORY USAGE samples of one Redis."""

    def __init__(self, client: rediskit.AnyRedis) -> None:
        self.client = client

    async def used(self) -> int:
        """The keyspace's bytes: what the allocator holds beyond start-up, less
        client buffers and script caches (fixed costs, not per player)."""
        stats = await self.client.memory_stats()
        fixed = ("startup.allocated", "clients.normal", "clients.slaves", "replication.backlog",
                 "aof.buffer", "lua.caches", "functions.caches", "cluster.links")  # fmt: skip
        return int(stats["total.allocated"]) - sum(int(stats.get(name, 0)) for name in fixed)

    async def evicted(self) -> int:
        return int((await self.client.info("stats"))["evicted_keys"])

    async def usage(self, keys: list[str]) -> dict:
        """Mean MEMORY USAGE (SAMPLES 0: every element counted) and the encodings."""
        sizes, encodings = [], set()
        for key in keys:
            size = await self.client.memory_usage(key, samples=0)
            if size is None:
                raise RuntimeError(f"{key} is missing: it expired or was evicted")
            sizes.append(int(size))
            encodings.add(await self.client.object("encoding", key))
        return {
            "keys": len(sizes),
            "mean_bytes": round(sum(sizes) / len(sizes), 1),
            "min_bytes": min(sizes),
            "max_bytes": max(sizes),
            "encoding": sorted(encodings),
            "example": keys[0],
        }


def load_catalog() -> tuple[str, list, dict]:
    hunt, checkpoints, _tiles = load_hunt_file(HUNT_FILE)
    return hunt.hunt_id, list(checkpoints), {"hunt": hunt}


def player_ids(n: int) -> list[str]:
    run = uuid.uuid4().hex[:6]
    return [f"player-{run}-{i:06d}" for i in range(n)]  # as the demo names them


# -- scan ---------------------------------------------------------------------


async def measure_scan(
    client, probe: Probe, hunt_id: str, players: list[str], sample: int, cps: list
) -> dict:
    cache = ScanCache(
        client,
        rate_limit=10_000,  # 33 scans in a row must not be refused here
        rate_window_s=LONG_TTL_S,
        pending_ttl_s=30.0,
        answer_ttl_s=86_400,
        last_scan_ttl_s=86_400,
    )
    hunt_now = datetime.now(UTC)

    async def scan(player: str, n: int) -> None:
        cp = cps[n % len(cps)]
        position = Position(
            cp.location.lat + random.uniform(-1e-4, 1e-4),
            cp.location.lon + random.uniform(-1e-4, 1e-4),
            8.0,
            hunt_now,
        )
        request = ScanInput(
            player,
            hunt_id,
            cp.tag_id,
            position.lat,
            position.lon,
            position.accuracy_m,
            hunt_now,
            f"c-{uuid.uuid4().hex[:12]}",
        )
        admission = await cache.admit(request)
        assert admission.retry_after_ms is None and not admission.seen
        answer = Answer(
            scan_id=new_scan_id(),
            status=Status.APPLIED,
            outcome=Outcome.UNLOCKED,
            points_awarded=cp.points,
            total_points=cp.points * (n + 1),
            checkpoint_id=cp.checkpoint_id,
            checkpoint_name=cp.name,
            first_finder=n == 0 and player.endswith("0"),
        )
        await cache.finish(request, answer, position)

    before = await probe.used()
    await bounded(lambda p=p: scan(p, 0) for p in players)
    one_scan = await probe.used()
    some = players[:sample]
    await bounded(lambda p=p, n=n: scan(p, n) for p in some for n in range(1, len(cps)))
    all_scans = await probe.used()
    idem = [k async for k in client.scan_iter(match="scan:idem:*", count=1000)]
    per_player_one_scan = (one_scan - before) / len(players)
    per_scan = (all_scans - one_scan) / (len(some) * (len(cps) - 1))
    return {
        "players": len(players),
        "players_with_all_checkpoints": len(some),
        "bytes_per_player_one_scan": round(per_player_one_scan, 1),
        "bytes_per_scan_answer": round(per_scan, 1),
        "bytes_per_checkpoint": round(per_scan, 1),
        "bytes_per_player_all_checkpoints": round(per_player_one_scan + per_scan * (len(cps) - 1)),
        "memory_usage": {
            "idempotency_answer": await probe.usage(random.sample(idem, SAMPLE_KEYS)),
            "rate_bucket": await probe.usage([scan_keys.rate(p) for p in players[:SAMPLE_KEYS]]),
            "last_scan": await probe.usage([scan_keys.last_scan(p) for p in players[:SAMPLE_KEYS]]),
        },
        "notes": "per player: rate bucket + last position + one answer per scan (24 h TTL): "
        "a player who finds every checkpoint holds 33 answers for a day.",
    }


# -- score --------------------------------------------------------------------


def progress(n_checkpoints: int, cps: list, at: datetime) -> Progress:
    unlocked = tuple(
        UnlockedCheckpoint(
            checkpoint_id=cp.checkpoint_id,
            points_awarded=cp.points + (cp.first_finder_bonus if i == 0 else 0),
            first_finder=i == 0,
            unlocked_at=at + timedelta(minutes=7 * i),
            scan_id=new_scan_id(),
        )
        for i, cp in enumerate(cps[:n_checkpoints])
    )
    score = Score(
        total_points=sum(c.points_awarded for c in unlocked),
        checkpoints_found=n_checkpoints,
        reached_at=unlocked[-1].unlocked_at,
        version=n_checkpoints,
    )
    return Progress(score=score, checkpoints=unlocked)


async def measure_score(
    client, probe: Probe, hunt_id: str, players: list[str], sample: int, cps: list
) -> dict:
    tier = HotTier(client, Metrics("redis-memory"), ttl_s=LONG_TTL_S, timeout_s=10.0)
    at = datetime.now(UTC) - timedelta(hours=4)
    full = progress(len(cps), cps, at)
    one = progress(1, cps, at)
    before = await probe.used()
    await bounded(lambda p=p: tier.fill_progress(hunt_id, p, full) for p in players)
    after_full = await probe.used()
    others = [f"{p}-one" for p in players[:sample]]
    await bounded(lambda p=p: tier.fill_progress(hunt_id, p, one) for p in others)
    after_one = await probe.used()
    per_full = (after_full - before) / len(players)
    per_one = (after_one - after_full) / len(others)
    per_cp = (per_full - per_one) / (len(cps) - 1)
    return {
        "players": len(players),
        "bytes_per_player_all_checkpoints": round(per_full, 1),
        "bytes_per_player_one_checkpoint": round(per_one, 1),
        "bytes_per_checkpoint": round(per_cp, 1),
        "bytes_per_player_base": round(per_one - per_cp, 1),
        "memory_usage": {
            "score_hash": await probe.usage(
                [score_keys.player_score(hunt_id, p) for p in players[:SAMPLE_KEYS]]
            ),
            "checkpoint_hash_33": await probe.usage(
                [score_keys.player_checkpoints(hunt_id, p) for p in players[:SAMPLE_KEYS]]
            ),
            "checkpoint_hash_1": await probe.usage(
                [score_keys.player_checkpoints(hunt_id, p) for p in others[:SAMPLE_KEYS]]
            ),
        },
        "notes": "per (hunt, player) with a score read or written in the last 30 s (TTL).",
    }


# -- leaderboard --------------------------------------------------------------


def updates(players: list[str], now_ms: int, seed: int) -> list[Update]:
    rng = random.Random(seed)
    return [
        Update(p, rng.randrange(0, 34) * 10, now_ms - rng.randrange(0, 4 * 3600_000), rng.randrange(1, 34))
        for p in players
    ]  # fmt: skip


async def build(store: BoardStore, hunt_id: str, rows: list[Update], *, finish: bool) -> str:
    build_id = uuid.uuid4().hex
    now_ms = int(time.time() * 1000)
    assert await store.begin_build(hunt_id, build_id, lb_keys.epoch_for(now_ms), 600_000)
    for start in range(0, len(rows), 500):  # the rebuild's page size
        await store.write_page(hunt_id, build_id, 600_000, rows[start : start + 500])
    if finish:
        await store.finish_build(hunt_id, build_id, now_ms)
    return build_id


async def measure_leaderboard(client, probe: Probe, hunt_id: str, players: list[str]) -> dict:
    store = BoardStore(client)
    now_ms = int(time.time() * 1000)
    before = await probe.used()
    await build(store, hunt_id, updates(players, now_ms, 1), finish=True)
    one_board = await probe.used()
    second = await build(store, hunt_id, updates(players, now_ms, 2), finish=False)
    two_boards = await probe.used()
    await store.finish_build(hunt_id, second, now_ms)
    await asyncio.sleep(0.5)  # UNLINK frees the old board in the background
    swapped = await probe.used()
    small_hunt, small = f"{hunt_id}-small", players[:100]
    before_small = await probe.used()
    await build(store, small_hunt, updates(small, now_ms, 3), finish=True)
    after_small = await probe.used()
    board_bytes = one_board - before
    usage = {
        "board_zset": await probe.usage([lb_keys.board(hunt_id)]),
        "players_hash": await probe.usage([lb_keys.players(hunt_id)]),
        "meta": await probe.usage([lb_keys.meta(hunt_id)]),
        "small_board_zset": await probe.usage([lb_keys.board(small_hunt)]),
        "small_players_hash": await probe.usage([lb_keys.players(small_hunt)]),
    }
    return {
        "players": len(players),
        "board_bytes": board_bytes,
        "bytes_per_player": round(board_bytes / len(players), 1),
        "bytes_per_player_memory_usage": round(
            (usage["board_zset"]["mean_bytes"] + usage["players_hash"]["mean_bytes"])
            / len(players),
            1,
        ),
        "bytes_per_checkpoint": 0,
        "rebuild_peak_bytes": two_boards - before,
        "rebuild_peak_ratio": round((two_boards - before) / board_bytes, 3),
        "after_swap_bytes": swapped - before,
        "small_board_players": len(small),
        "small_board_bytes_per_player": round((after_small - before_small) / len(small), 1),
        "memory_usage": usage,
        "notes": "one sorted set (skiplist above 128 members) and one hash per hunt; a "
        "rebuild fills a second board and RENAMEs it over the first, so the peak is two boards.",
    }


# -- geo ----------------------------------------------------------------------


def geo_catalog(hunt_id: str, proto_cps: list, proto_hunt) -> tuple[Hunt, list[Checkpoint]]:
    grid = proto_hunt.grid
    now = datetime.now(UTC)
    hunt = Hunt(
        hunt_id=hunt_id,
        name=proto_hunt.name,
        starts_at=proto_hunt.starts_at.ToDatetime(tzinfo=UTC),
        ends_at=proto_hunt.ends_at.ToDatetime(tzinfo=UTC),
        status=HuntStatus.PUBLISHED,
        grid=Grid(grid.origin.lat, grid.origin.lon, grid.tile_size_m, grid.columns, grid.rows),
        created_at=now,
        updated_at=now,
        version=40,
    )
    cps = [
        Checkpoint(
            checkpoint_id=c.checkpoint_id,
            hunt_id=hunt_id,
            tag_id=c.tag_id,
            name=c.name,
            lat=c.location.lat,
            lon=c.location.lon,
            radius_m=c.radius_m,
            points=c.points,
            first_finder_bonus=c.first_finder_bonus,
            active=True,
            version=i + 1,
        )
        for i, c in enumerate(proto_cps)
    ]
    return hunt, cps


async def measure_geo(
    client,
    probe: Probe,
    hunt_id: str,
    players: list[str],
    sample: int,
    proto_cps,
    proto_hunt,
    catalog_copies: int,
) -> dict:
    cache = GeoCache(
        client,
        catalog_ttl_s=LONG_TTL_S,
        negative_ttl_s=LONG_TTL_S,
        live_bucket_s=GEO_LIVE_BUCKET_S,
    )
    await cache.load_scripts()
    hunt, cps = geo_catalog(hunt_id, proto_cps, proto_hunt)
    # The demo hunt, and copies of it (other ids and tags, same sizes), so the
    # catalog's bytes stand out from the allocator's noise.
    copies = [(hunt, cps)] + [
        (
            dataclasses.replace(hunt, hunt_id=f"{hunt_id}-{i:04d}"),
            [
                dataclasses.replace(c, hunt_id=f"{hunt_id}-{i:04d}", tag_id=f"{c.tag_id}-{i:04d}")
                for c in cps
            ],
        )
        for i in range(1, catalog_copies)
    ]
    n_cps = sum(len(c) for _, c in copies)
    before = await probe.used()
    await bounded(
        lambda c=c: cache.put_catalog(tags=[(x.tag_id, Versioned(x.version, x)) for x in c])
        for _, c in copies
    )
    after_tags = await probe.used()
    await bounded(
        lambda h=h, c=c: cache.store_checkpoints(
            h.hunt_id, CheckpointSet(version=len(c), checkpoints=tuple(c))
        )
        for h, c in copies
    )
    after_set = await probe.used()
    await bounded(
        lambda h=h: cache.put_catalog(hunts=[(h.hunt_id, Versioned(h.version, h))])
        for h, _ in copies
    )
    after_hunt = await probe.used()
    # Dated ahead so nothing expires while the fill runs (same key and value sizes).
    now_ms = int(time.time() * 1000)
    bucket_ms = GEO_LIVE_BUCKET_S * 1000
    seen_ms = (now_ms // bucket_ms + 15) * bucket_ms + 1234
    rng = random.Random(4)

    def sighting(player: str, at_ms: int) -> GeoSighting:
        cp = rng.choice(cps)
        return GeoSighting(
            hunt_id, player, cp.lat + rng.uniform(-2e-3, 2e-3), cp.lon + rng.uniform(-2e-3, 2e-3),
            rng.uniform(3, 20), at_ms,
        )  # fmt: skip

    start = await probe.used()
    await bounded(lambda p=p: cache.record(sighting(p, seen_ms), now_ms) for p in players)
    after_players = await probe.used()
    some = players[:sample]
    await bounded(lambda p=p: cache.record(sighting(p, seen_ms + bucket_ms), now_ms) for p in some)
    after_second = await probe.used()
    per_player = (after_players - start) / len(players)
    per_bucket = (after_second - after_players) / len(some)
    buckets_in_window = LIVE_WINDOW_S // GEO_LIVE_BUCKET_S + 1
    bucket = seen_ms // bucket_ms
    return {
        "players": len(players),
        "checkpoints": len(cps),
        "catalog_copies": len(copies),
        "bytes_per_checkpoint": round((after_set - before) / n_cps, 1),
        "bytes_per_checkpoint_tag_cache": round((after_tags - before) / n_cps, 1),
        "bytes_per_checkpoint_geo_set": round((after_set - after_tags) / n_cps, 1),
        "bytes_per_hunt_entry": round((after_hunt - after_set) / len(copies), 1),
        "bytes_per_player_one_bucket": round(per_player, 1),
        "bytes_per_extra_bucket": round(per_bucket, 1),
        "live_buckets_in_window": buckets_in_window,
        "bytes_per_player_active_whole_window": round(
            per_player + per_bucket * (buckets_in_window - 1)
        ),
        "memory_usage": {
            "location": await probe.usage([geo_keys.location(p) for p in players[:SAMPLE_KEYS]]),
            "live_bucket_geo_set": await probe.usage([geo_keys.live(hunt_id, bucket)]),
            "live_bucket_seen": await probe.usage([geo_keys.live_seen(hunt_id, bucket)]),
            "tag": await probe.usage([geo_keys.tag(c.tag_id) for c in cps]),
            "checkpoint_geo_set": await probe.usage([geo_keys.checkpoints(hunt_id)]),
            "checkpoint_info": await probe.usage([geo_keys.checkpoint_info(hunt_id)]),
            "hunt": await probe.usage([geo_keys.hunt(hunt_id)]),
        },
        "notes": f"per player: last location (30 s TTL) and one member of each live bucket "
        f"({GEO_LIVE_BUCKET_S} s) it was seen in; a player moving for the whole 60 s window "
        f"is in up to {buckets_in_window}.",
    }


# -- running ------------------------------------------------------------------


async def measure(service: str, args: argparse.Namespace, workdir: Path) -> dict:
    config = REPO / "services" / service / "redis.conf"
    server = RedisServer(config, free_port(), workdir / service).start()
    client = rediskit.connect(server.url, socket_timeout=30.0)
    probe = Probe(client)
    hunt_id, proto_cps, extra = load_catalog()
    players = player_ids(args.players)
    sample = min(args.sample_players, len(players))
    started = time.monotonic()
    try:
        await rediskit.wait_for(client, 10.0)
        pinned = int((await client.config_get("maxmemory"))["maxmemory"])
        await client.config_set("maxmemory", "16gb")  # nothing may be evicted while measuring
        baseline = await probe.used()
        if service == "scan":
            figures = await measure_scan(client, probe, hunt_id, players, sample, proto_cps)
        elif service == "score":
            figures = await measure_score(client, probe, hunt_id, players, sample, proto_cps)
        elif service == "leaderboard":
            figures = await measure_leaderboard(client, probe, hunt_id, players)
        else:
            figures = await measure_geo(
                client, probe, hunt_id, players, sample, proto_cps, extra["hunt"], args.hunts
            )
        evicted = await probe.evicted()
        if evicted:
            raise RuntimeError(f"{service}: {evicted} keys evicted during the fill")
        info = await client.info("memory")
        figures.update(
            {
                "baseline_used_memory": baseline,
                "used_memory": int(info["used_memory"]),
                "used_memory_rss": int(info["used_memory_rss"]),
                "keys": int(await client.dbsize()),
                "pinned_maxmemory": pinned,
                "policy": (await client.config_get("maxmemory-policy"))["maxmemory-policy"],
                "seconds": round(time.monotonic() - started, 1),
            }
        )
        return figures
    finally:
        await client.aclose()
        server.stop()


def write_results(report: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "redis_memory.json").write_text(json.dumps(report, indent=2) + "\n")
    s = report["services"]
    n = report["players"]
    mib = 1024**2
    lines = [
        f"# Redis memory per player and per checkpoint — {report['when']}",
        "",
        f"{n:,} players, the demo's {report['checkpoints']} checkpoints; each service's cache "
        "code writing to a standalone Redis started from its pinned redis.conf (maxmemory "
        f"lifted for the fill). Redis {report['redis_version']}. Bytes per player and per "
        "checkpoint are deltas of the keyspace's memory (MEMORY STATS: allocated bytes less "
        "start-up, client buffers and script caches, i.e. the part of used_memory that grows "
        "with players), divided by what was written.",
        "",
        "| Redis | per player | per checkpoint | what a player holds | pinned maxmemory | "
        "players that fit |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    scan, score, lb, geo = s["scan"], s["score"], s["leaderboard"], s["geo"]
    rows = [
        ("scan", scan["bytes_per_player_one_scan"], scan["bytes_per_checkpoint"],
         f"1 scan: {scan['bytes_per_player_one_scan']:.0f} B; all 33: "
         f"{scan['bytes_per_player_all_checkpoints']:,} B (one answer per scan, 24 h)",
         scan["pinned_maxmemory"], scan["bytes_per_player_all_checkpoints"]),
        ("score", score["bytes_per_player_base"], score["bytes_per_checkpoint"],
         f"1 checkpoint: {score['bytes_per_player_one_checkpoint']:.0f} B; all 33: "
         f"{score['bytes_per_player_all_checkpoints']:,.0f} B (30 s TTL)",
         score["pinned_maxmemory"], score["bytes_per_player_all_checkpoints"]),
        ("leaderboard", lb["bytes_per_player"], 0,
         f"{lb['bytes_per_player']:.0f} B on a {lb['players']:,} board "
         f"({'/'.join(lb['memory_usage']['board_zset']['encoding'])}); rebuild peak "
         f"{lb['rebuild_peak_ratio']:.2f}x the board",
         lb["pinned_maxmemory"], lb["bytes_per_player"] * lb["rebuild_peak_ratio"]),
        ("geo", geo["bytes_per_player_one_bucket"], geo["bytes_per_checkpoint"],
         f"seen once: {geo['bytes_per_player_one_bucket']:.0f} B; moving for 60 s: "
         f"{geo['bytes_per_player_active_whole_window']} B (30-60 s TTLs)",
         geo["pinned_maxmemory"], geo["bytes_per_player_active_whole_window"]),
    ]  # fmt: skip
    for name, per_player, per_cp, holds, maxmemory, worst in rows:
        lines.append(
            f"| {name} | {per_player:,.0f} B | {per_cp:,.0f} B | {holds} | "
            f"{maxmemory / mib:,.0f} MiB | {int(maxmemory / worst):,} |"
        )
    lines += [
        "",
        "players that fit: maxmemory / the per-player figure of the heaviest case "
        "(scan: all 33 answers; score: all 33 checkpoints; leaderboard: one hunt, with the "
        "rebuild's second board; geo: moving for the whole window).",
        "",
        "`MEMORY USAGE key SAMPLES 0` of the keys written (mean over the sample):",
        "",
        "| Redis | key | keys sampled | mean bytes | encoding |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, figures in s.items():
        for kind, usage in figures["memory_usage"].items():
            lines.append(
                f"| {name} | {kind} (`{usage['example']}`) | {usage['keys']} | "
                f"{usage['mean_bytes']:,.0f} | {'/'.join(usage['encoding'])} |"
            )
    (RESULTS / "redis_memory.md").write_text("\n".join(lines) + "\n")


async def main_async(args: argparse.Namespace, workdir: Path) -> dict:
    services = {}
    for service in args.services:
        print(f"== {service}: {args.players:,} players", flush=True)
        services[service] = await measure(service, args, workdir)
        print(json.dumps({k: v for k, v in services[service].items() if k != "memory_usage"}))
    return services


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.redis_memory", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--players", type=int, default=100_000)
    parser.add_argument(
        "--sample-players", type=int, default=5_000, help="players given every checkpoint"
    )
    parser.add_argument(
        "--hunts", type=int, default=300, help="copies of the demo hunt's catalog (geo)"
    )
    parser.add_argument("--services", nargs="+", default=["scan", "score", "leaderboard", "geo"])
    args = parser.parse_args()
    workdir = REPO / ".run" / f"redis-memory-{uuid.uuid4().hex[:6]}"
    try:
        services = asyncio.run(main_async(args, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    version = (
        subprocess.run(["redis-server", "--version"], capture_output=True, text=True, check=False)
        .stdout.split()[2]
        .removeprefix("v=")
    )
    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "players": args.players,
        "checkpoints": len(load_catalog()[1]),
        "redis_version": version,
        "services": services,
    }
    if set(services) == {"scan", "score", "leaderboard", "geo"}:
        write_results(report)
        print(f"results: {RESULTS}/redis_memory.json, redis_memory.md")
    else:
        print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
