"""The festival workload of `make bench`, run in its own process.

    python -m bench.festival --scan A --geo A --score A --leaderboard A
        [--steps 50,100,...] [--step-s S] [--think-s T] [--mix scan=8,top=12,...]

Simulated players on a hunt of this run's own (a GRID x GRID map of 100 m
tiles with a checkpoint every 100 m, created through geo with the admin
token). Each player is a small state machine on its own schedule: it walks
(1.4 m/s) towards the next checkpoint it has not found, and after each think
time (exponential, mean --think-s) does one thing, drawn from the mix:

    scan    SubmitScan of its target checkpoint, where it stands (it arrived),
            then walks on to the next one
    top     GetTop (10)                rank     GetRank of itself
    around  GetAround itself (5)       score    GetScore of itself
    tile    GetTile of the tile under it or a neighbour (panning the map),
            with known_version of the copy it holds: mostly "not modified"
    view    GetTiles of the 3 x 3 tiles around it (opening the map), each
            with the version it holds
    nearby  NearbyPlayers within 300 m of it

The default mix is 92% reads and 8% SubmitScan. A player not yet on the
board gets NOT_FOUND from GetRank and GetAround: an answer, counted apart.

Open loop: every action leaves at its scheduled time whatever the answers do,
and its latency counts from then (no coordinated omission). First the
unloaded figures: each RPC alone, one call at a time. Then steps of more and
more players (the players of a step stay on for the next, with what they
found and the tiles they hold), each --step-s long, or longer until the
rarest RPC had about MIN_SAMPLES calls: per step and RPC, calls,
p50/p99 and errors (any gRPC error but those NOT_FOUNDs). A step holds when
every RPC's p99 is within LIMIT_X of its unloaded p99 and nothing failed;
after the first step that does not hold, one more between it and the last
that held. Prints one JSON object; `players_sustained` is the largest step
that held.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import math
import random
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime

import grpc
import uvloop

from bench.loadgen import channel
from bench.procstat import cpu_seconds, postgres_cpu_seconds
from libs.auth import bearer_metadata
from libs.timestamps import timestamp
from tools.inprocess import checkpoint_message, hunt_message
from tools.stats import percentile
from treasure.common.v1 import common_pb2
from treasure.geo.v1 import geo_pb2, geo_pb2_grpc
from treasure.leaderboard.v1 import leaderboard_pb2, leaderboard_pb2_grpc
from treasure.scan.v1 import scan_pb2, scan_pb2_grpc
from treasure.score.v1 import score_pb2, score_pb2_grpc

DEFAULT_MIX = {"scan": 8, "top": 12, "rank": 12, "around": 10, "score": 12, "tile": 28,
               "view": 6, "nearby": 12}  # fmt: skip
#: A step holds while every RPC's p99 is within this multiple of its unloaded p99.
LIMIT_X = 3.0
#: The map: GRID x GRID tiles of TILE_M metres, a checkpoint at each tile's centre.
GRID = 12
TILE_M = 100.0
TILE_BYTES = 2048
ORIGIN = (38.7000, -9.1600)
M_PER_DEG_LAT = 111_320.0
M_PER_DEG_LON = M_PER_DEG_LAT * math.cos(math.radians(ORIGIN[0]))
WALK_MPS = 1.4
NEARBY_M = 300.0
#: Unloaded calls per RPC (one at a time), and the idle time before each.
UNLOADED_CALLS = 150
UNLOADED_GAP_S = 0.02
#: A step lasts --step-s, or longer until the rarest RPC has had about
#: MIN_SAMPLES calls (a p99 of fewer is just the slowest call), at most MAX_STEP_S.
MIN_SAMPLES = 100
MAX_STEP_S = 40.0
TIMEOUT_S = 10.0


def to_point(x_m: float, y_m: float) -> common_pb2.GeoPoint:
    return common_pb2.GeoPoint(lat=ORIGIN[0] + y_m / M_PER_DEG_LAT,
                               lon=ORIGIN[1] + x_m / M_PER_DEG_LON)  # fmt: skip


class Festival:
    """The hunt, the stubs, and what every call answered."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.hunt_id = f"fest-{uuid.uuid4().hex[:8]}"
        self.channels = {name: channel(getattr(args, name))
                         for name in ("scan", "geo", "score", "leaderboard")}  # fmt: skip
        self.scan = scan_pb2_grpc.ScanServiceStub(self.channels["scan"])
        self.geo = geo_pb2_grpc.GeoServiceStub(self.channels["geo"])
        self.score = score_pb2_grpc.ScoreServiceStub(self.channels["score"])
        self.board = leaderboard_pb2_grpc.LeaderboardServiceStub(self.channels["leaderboard"])
        self.metadata = bearer_metadata(args.token)
        self.admin = bearer_metadata(args.admin_token)
        #: (tile column, row) -> its checkpoint's tag
        self.tags: dict[tuple[int, int], str] = {}

    async def create(self) -> None:
        await self.geo.CreateHunt(geo_pb2.CreateHuntRequest(hunt=hunt_message(
            self.hunt_id, columns=GRID, rows=GRID, tile_size_m=TILE_M, origin=ORIGIN)),
            metadata=self.admin)  # fmt: skip
        for x in range(GRID):
            for y in range(GRID):
                tag = f"{self.hunt_id}-{x}-{y}"
                centre = to_point((x + 0.5) * TILE_M, (y + 0.5) * TILE_M)
                cp = checkpoint_message(f"f{x}-{y}", hunt_id=self.hunt_id, tag_id=tag,
                                        lat=centre.lat, lon=centre.lon, radius_m=25, points=10,
                                        first_finder_bonus=5)  # fmt: skip
                await self.geo.UpsertCheckpoint(geo_pb2.UpsertCheckpointRequest(checkpoint=cp),
                                                metadata=self.admin)  # fmt: skip
                await self.geo.PutTile(geo_pb2.PutTileRequest(
                    hunt_id=self.hunt_id, x=x, y=y, version=1, content_type="image/png",
                    data=(f"{x}:{y}:".encode() * TILE_BYTES)[:TILE_BYTES]), metadata=self.admin)  # fmt: skip
                self.tags[(x, y)] = tag
        refreshed = await self.geo.RefreshTiles(
            geo_pb2.RefreshTilesRequest(hunt_id=self.hunt_id), metadata=self.admin
        )
        assert refreshed.refreshed, "the tile view did not refresh"

    async def close(self) -> None:
        for ch in self.channels.values():
            await ch.close()


class Player:
    """One player: where it is, where it walks, what it found and holds."""

    def __init__(self, festival: Festival, n: int, rng: random.Random) -> None:
        self.f = festival
        self.id = f"{festival.hunt_id}-p{n}"
        self.rng = rng
        self.x, self.y = rng.uniform(0, GRID * TILE_M), rng.uniform(0, GRID * TILE_M)
        self.moved_at = time.perf_counter()
        self.found: set[tuple[int, int]] = set()
        self.target = self._next_target()
        #: (column, row) -> version of the tile it holds
        self.tiles: dict[tuple[int, int], int] = {}

    def _cell(self) -> tuple[int, int]:
        return (min(GRID - 1, int(self.x // TILE_M)), min(GRID - 1, int(self.y // TILE_M)))

    def _next_target(self) -> tuple[int, int]:
        here = self._cell()
        left = [c for c in self.f.tags if c not in self.found]
        if not left:
            self.found.clear()
            left = list(self.f.tags)
        return min(
            left, key=lambda c: (abs(c[0] - here[0]) + abs(c[1] - here[1]), self.rng.random())
        )

    def walk(self) -> None:
        """Moves towards the target for the time since the last move."""
        now = time.perf_counter()
        step = WALK_MPS * (now - self.moved_at)
        self.moved_at = now
        tx, ty = (self.target[0] + 0.5) * TILE_M, (self.target[1] + 0.5) * TILE_M
        dx, dy = tx - self.x, ty - self.y
        distance = math.hypot(dx, dy)
        if distance <= step:
            self.x, self.y = tx, ty
        else:
            self.x, self.y = self.x + dx * step / distance, self.y + dy * step / distance

    async def act(self, action: str) -> str:
        """One call; returns its outcome (an error raises)."""
        self.walk()
        f, md = self.f, self.f.metadata
        if action == "scan":
            cell = self.target
            self.x, self.y = (cell[0] + 0.5) * TILE_M, (cell[1] + 0.5) * TILE_M
            reply = await f.scan.SubmitScan(scan_pb2.SubmitScanRequest(
                player_id=self.id, hunt_id=f.hunt_id, tag_id=f.tags[cell],
                location=to_point(self.x, self.y), accuracy_m=5.0, scanned_at=timestamp(datetime.now(UTC)),
                client_scan_id=uuid.uuid4().hex), metadata=md, timeout=TIMEOUT_S)  # fmt: skip
            self.found.add(cell)
            self.target = self._next_target()
            return scan_pb2.ScanOutcome.Name(reply.outcome).removeprefix("SCAN_OUTCOME_").lower()
        if action == "top":
            await f.board.GetTop(leaderboard_pb2.GetTopRequest(hunt_id=f.hunt_id, limit=10),
                                 metadata=md, timeout=TIMEOUT_S)  # fmt: skip
            return "ok"
        if action in ("rank", "around"):
            try:
                if action == "rank":
                    await f.board.GetRank(leaderboard_pb2.GetRankRequest(
                        hunt_id=f.hunt_id, player_id=self.id), metadata=md, timeout=TIMEOUT_S)  # fmt: skip
                else:
                    await f.board.GetAround(leaderboard_pb2.GetAroundRequest(
                        hunt_id=f.hunt_id, player_id=self.id, n=5), metadata=md, timeout=TIMEOUT_S)  # fmt: skip
            except grpc.aio.AioRpcError as err:
                if err.code() == grpc.StatusCode.NOT_FOUND:
                    return "not_on_board"
                raise
            return "ok"
        if action == "score":
            await f.score.GetScore(score_pb2.GetScoreRequest(hunt_id=f.hunt_id, player_id=self.id),
                                   metadata=md, timeout=TIMEOUT_S)  # fmt: skip
            return "ok"
        if action == "tile":
            cx, cy = self._cell()
            cell = (min(GRID - 1, max(0, cx + self.rng.choice((-1, 0, 0, 1)))),
                    min(GRID - 1, max(0, cy + self.rng.choice((-1, 0, 0, 1)))))  # fmt: skip
            reply = await f.geo.GetTile(geo_pb2.GetTileRequest(
                hunt_id=f.hunt_id, x=cell[0], y=cell[1], known_version=self.tiles.get(cell, 0)),
                metadata=md, timeout=TIMEOUT_S)  # fmt: skip
            if reply.not_modified:
                return "not_modified"
            self.tiles[cell] = reply.version
            return "full"
        if action == "view":
            cx, cy = self._cell()
            cells = [(x, y) for x in range(max(0, cx - 1), min(GRID, cx + 2))
                     for y in range(max(0, cy - 1), min(GRID, cy + 2))]  # fmt: skip
            reply = await f.geo.GetTiles(geo_pb2.GetTilesRequest(hunt_id=f.hunt_id, cells=[
                geo_pb2.TileRef(x=x, y=y, known_version=self.tiles.get((x, y), 0))
                for x, y in cells]), metadata=md, timeout=TIMEOUT_S)  # fmt: skip
            fetched = 0
            for tile in reply.tiles:
                if tile.found and not tile.not_modified:
                    self.tiles[(tile.x, tile.y)] = tile.version
                    fetched += 1
            return "not_modified" if not fetched else "full"
        if action == "nearby":
            await f.geo.NearbyPlayers(geo_pb2.NearbyPlayersRequest(
                hunt_id=f.hunt_id, center=to_point(self.x, self.y), radius_m=NEARBY_M, limit=20),
                metadata=md, timeout=TIMEOUT_S)  # fmt: skip
            return "ok"
        raise ValueError(f"unknown action {action!r}")


class Calls:
    """What one step (or the unloaded pass) measured, per RPC."""

    def __init__(self) -> None:
        self.latencies: dict[str, list[float]] = {}
        self.outcomes: dict[str, Counter] = {}
        self.errors: dict[str, Counter] = {}

    def record(self, action: str, took: float, outcome: str | None, error: str | None) -> None:
        if error is not None:
            self.errors.setdefault(action, Counter())[error] += 1
        else:
            self.latencies.setdefault(action, []).append(took)
            self.outcomes.setdefault(action, Counter())[outcome or "ok"] += 1

    def figures(self, elapsed_s: float) -> dict:
        out = {}
        for action in sorted(set(self.latencies) | set(self.errors)):
            ordered = sorted(self.latencies.get(action, []))
            errors = self.errors.get(action, Counter())
            out[action] = {
                "calls": len(ordered) + sum(errors.values()),
                "per_s": round((len(ordered) + sum(errors.values())) / elapsed_s, 2),
                "p50_ms": round(percentile(ordered, 50) * 1000, 3),
                "p99_ms": round(percentile(ordered, 99) * 1000, 3),
                "errors": sum(errors.values()),
                "error_codes": dict(errors),
                "outcomes": dict(self.outcomes.get(action, Counter())),
            }
        return out


async def timed(player: Player, action: str, scheduled: float, calls: Calls) -> None:
    outcome = error = None
    try:
        outcome = await player.act(action)
    except grpc.aio.AioRpcError as err:
        error = err.code().name
    calls.record(action, time.perf_counter() - scheduled, outcome, error)


async def unloaded(players: list[Player], fresh: list[Player], actions: list[str],
                   n: int) -> dict:  # fmt: skip
    """Each RPC alone, one call at a time, UNLOADED_GAP_S apart (as a step's
    calls arrive: an idle server wakes for each; calls back to back would
    find it awake and be faster than any step could be), n calls after a few
    not counted. Scans come from `fresh` players, each its first: the full
    path, never a speed check failed by scanning again at once elsewhere."""
    calls = Calls()
    began = time.perf_counter()
    for action in actions:
        for i in range(n + 10):
            player = fresh[i] if action == "scan" else players[i % len(players)]
            await asyncio.sleep(UNLOADED_GAP_S)
            started = time.perf_counter()
            await timed(player, action, started, calls if i >= 10 else Calls())
    return calls.figures(time.perf_counter() - began)


def stack_cpu_seconds(pids: dict[str, int], postmaster: int | None) -> dict[str, float]:
    """CPU used so far by each process of the stack (Postgres: all of it)."""
    used = {name: cpu_seconds(pid) for name, pid in pids.items()}
    if postmaster:
        used["postgres"] = postgres_cpu_seconds(postmaster)
    return used


async def step(players: list[Player], mix: dict[str, float], think_s: float, seconds: float,
               rng: random.Random) -> tuple[dict, float, float]:  # fmt: skip
    """Every player on its own exponential schedule for `seconds`, open loop."""
    actions, weights = list(mix), list(mix.values())
    calls = Calls()
    begin = time.perf_counter()
    end = begin + seconds
    schedule = [(begin + rng.expovariate(1 / think_s), i) for i in range(len(players))]
    heapq.heapify(schedule)
    pending: set[asyncio.Task] = set()
    own_before = time.process_time()
    while schedule and schedule[0][0] < end:
        at, i = heapq.heappop(schedule)
        while (delay := at - time.perf_counter()) > 0:  # noqa: ASYNC110 - a clock, not an event
            await asyncio.sleep(delay)
        action = rng.choices(actions, weights)[0]
        task = asyncio.ensure_future(timed(players[i], action, at, calls))
        pending.add(task)
        task.add_done_callback(pending.discard)
        heapq.heappush(schedule, (at + rng.expovariate(1 / think_s), i))
    if pending:
        await asyncio.wait(pending, timeout=TIMEOUT_S + 5)
    elapsed = time.perf_counter() - begin
    return calls.figures(elapsed), elapsed, (time.process_time() - own_before) / elapsed


def holds(figures: dict, reference: dict) -> tuple[bool, list[str]]:
    """Whether a step held: every RPC's p99 within LIMIT_X of unloaded, no errors."""
    why = []
    for action, f in figures.items():
        if f["errors"]:
            why.append(f"{action}: {f['errors']} errors {f['error_codes']}")
        limit = LIMIT_X * reference[action]["p99_ms"]
        if f["p99_ms"] > limit:
            why.append(f"{action}: p99 {f['p99_ms']} ms > {limit:.2f} ms")
    return not why, why


def parse_mix(text: str) -> dict[str, float]:
    mix: dict[str, float] = {k: float(v) for k, v in DEFAULT_MIX.items()}
    for part in filter(None, text.split(",")):
        name, _, weight = part.partition("=")
        if name not in DEFAULT_MIX:
            raise SystemExit(f"--mix: unknown action {name!r} (one of {', '.join(DEFAULT_MIX)})")
        mix[name] = float(weight)
    return {k: v for k, v in mix.items() if v > 0}


async def main_async(args: argparse.Namespace) -> dict:
    mix = parse_mix(args.mix)
    pids = {name: int(pid) for name, _, pid in
            (part.partition("=") for part in filter(None, args.stack_pids.split(",")))}  # fmt: skip
    steps = [int(s) for s in args.steps.split(",")]
    rng = random.Random(args.seed)
    festival = Festival(args)
    try:
        await festival.create()
        population = steps[-1] + args.unloaded_calls + 10
        players = [Player(festival, n, random.Random(rng.random())) for n in range(population)]
        # Warm-up, not measured: every service's connections and caches, a board with players.
        for player in players[:50]:
            await timed(player, "scan", time.perf_counter(), Calls())
        reference = await unloaded(players[:50], players[steps[-1]:], list(mix),
                                   args.unloaded_calls)  # fmt: skip
        print(f"festival, unloaded: {json.dumps({k: v['p99_ms'] for k, v in reference.items()})}",
              file=sys.stderr, flush=True)  # fmt: skip
        results: list[dict] = []
        held: int = 0
        failed: int | None = None

        rarest = min(mix.values()) / sum(mix.values())

        async def run(count: int) -> bool:
            wanted = MIN_SAMPLES / (count / args.think_s * rarest)
            seconds = min(MAX_STEP_S, max(args.step_s, wanted))
            cpu_before = stack_cpu_seconds(pids, args.postmaster)
            figures, elapsed, own = await step(players[:count], mix, args.think_s, seconds, rng)
            cpu = {name: round((used - cpu_before[name]) / elapsed, 3)
                   for name, used in stack_cpu_seconds(pids, args.postmaster).items()}  # fmt: skip
            ok, why = holds(figures, reference)
            total = sum(f["calls"] for f in figures.values())
            results.append({"players": count, "held": ok, "why_not": why,
                            "requests_per_s": round(total / elapsed, 2), "elapsed_s": round(elapsed, 3),
                            "loadgen_cpu_cores": round(own, 3),
                            "stack_cpu_cores": round(sum(cpu.values()), 3),
                            "cpu_cores": cpu, "rpcs": figures})  # fmt: skip
            print(f"festival, {count} players: {total / elapsed:.0f} requests/s, "
                  f"{'held' if ok else 'did not hold: ' + '; '.join(why)}",
                  file=sys.stderr, flush=True)  # fmt: skip
            return ok

        for count in steps:
            if await run(count):
                held = count
            else:
                failed = count
                break
        if failed is not None and held and failed > held + 1:  # one bisecting step
            middle = (held + failed) // 2
            if await run(middle):
                held = middle
    finally:
        await festival.close()
    at_held = next((r for r in results if r["players"] == held and r["held"]), None)
    return {
        "hunt_id": festival.hunt_id,
        "mix_percent": {k: round(100 * v / sum(mix.values()), 1) for k, v in mix.items()},
        "think_s": args.think_s,
        "step_s": args.step_s,
        "limit_x": LIMIT_X,
        "map": {"tiles": GRID * GRID, "tile_bytes": TILE_BYTES, "checkpoints": GRID * GRID},
        "unloaded": reference,
        "players_sustained": held,
        "requests_per_s_at_sustained": at_held["requests_per_s"] if at_held else 0.0,
        # What a studio plans with: players held per core the stack used there.
        "players_per_stack_core": round(held / at_held["stack_cpu_cores"])
        if at_held and at_held["stack_cpu_cores"]
        else None,
        "first_step_not_held": failed,
        "steps": sorted(results, key=lambda r: r["players"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.festival",
                                     description=__doc__.split("\n\n")[0])  # fmt: skip
    for name in ("scan", "geo", "score", "leaderboard"):
        parser.add_argument(f"--{name}", required=True, help=f"the {name} service's address")
    parser.add_argument("--steps", default="200,400,800,1600,3200,6400,12800",
                        help="player counts, rising")  # fmt: skip
    parser.add_argument("--step-s", type=float, default=15.0, help="seconds per step")
    parser.add_argument("--think-s", type=float, default=5.0, help="mean time between actions")
    parser.add_argument("--mix", default="", help="e.g. scan=8,tile=40 (weights; others default)")
    parser.add_argument("--unloaded-calls", type=int, default=UNLOADED_CALLS)
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--stack-pids", default="", help="name=pid,...: CPU measured per step")
    parser.add_argument("--postmaster", type=int, help="Postgres's postmaster: its CPU too")
    parser.add_argument("--token", default="local-client-token")
    parser.add_argument("--admin-token", default="local-admin-token")
    args = parser.parse_args()
    json.dump(uvloop.run(main_async(args)), sys.stdout)


if __name__ == "__main__":
    main()
