"""The load generator of `make bench`, run in its own process.

    python -m bench.loadgen --target scan|tile|echo --addr HOST:PORT
        (--rate R | --concurrency C) --duration S [--connections N] [--hunt-file F]
        [--warmup W] [--requests N]

Open loop (`--rate`): requests are sent on a fixed schedule whatever the
answers do, and each latency is measured from its scheduled start, so a slow
server cannot hide latency by slowing the sender (no coordinated omission).
Closed loop (`--concurrency`): C clients, each with one request in flight at
a time; a refused request is sent again after its retry hint (RetryInfo), as
a client should, so the refusals do not turn into a storm of retries.
`--connections N`: the calls take N client connections in turn (each its own
channel and TCP connection, as N mobile backend pods would), not one.

Each answer is counted as accepted (any answer), shed (UNAVAILABLE or
RESOURCE_EXHAUSTED: the server refused it), dropped (CANCELLED, which this
client never causes: gRPC's core dropped the call unread because the
server's queue of calls not yet taken was full, `GRPC_MAX_PENDING_RPCS`) or
failed (any other error, such as DEADLINE_EXCEEDED), with the latencies of
the first three apart. A closed-loop client retries a dropped call after
DROPPED_BACKOFF_S, as it does a shed one after its hint.

Tiles (`--target tile`): GetTile of random cells of `--tile-hunt`, a
`--tile-grid` square, holding `--known-version` (0: none, the full tile);
with `--tiles-per-call N`, GetTiles of N cells (a square block) per call.

Scans are all valid and distinct: each comes from a new player at a
checkpoint of the demo hunt, so every one is recorded, checked in and
unlocked (the full path). Prints one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import grpc
import uvloop
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2, status_pb2

from libs.auth import bearer_metadata
from libs.channels import BALANCING
from tools.huntctl import load_hunt_file
from tools.stats import Recorder, percentile
from treasure.common.v1 import common_pb2
from treasure.geo.v1 import geo_pb2, geo_pb2_grpc
from treasure.scan.v1 import scan_pb2, scan_pb2_grpc

ECHO_METHOD = "/bench.Echo/Echo"


#: Codes of a server that refused a call (shed it) rather than failed it.
SHED = {"error:UNAVAILABLE", "error:RESOURCE_EXHAUSTED"}
#: The code of a call gRPC's core dropped before any handler saw it.
DROPPED = "error:CANCELLED"
#: How long a closed-loop client waits before it sends a dropped call again
#: (a drop carries no hint; the server's shortest hint).
DROPPED_BACKOFF_S = 0.125


class ScanTarget:
    def __init__(self, channels: list[grpc.aio.Channel], hunt_file: str, token: str) -> None:
        hunt, checkpoints, _ = load_hunt_file(Path(hunt_file))
        self.hunt_id = hunt.hunt_id
        self.checkpoints = checkpoints
        self.stubs = [scan_pb2_grpc.ScanServiceStub(c) for c in channels]
        self.metadata = bearer_metadata(token)
        self.run = uuid.uuid4().hex[:8]
        self.n = 0

    def player(self, n: int) -> str:
        return f"b{self.run}-{n}"

    async def call(self) -> str:
        self.n += 1
        n = self.n
        cp = self.checkpoints[n % len(self.checkpoints)]
        at = Timestamp()
        at.FromDatetime(datetime.now(UTC))
        reply = await self.stubs[n % len(self.stubs)].SubmitScan(
            scan_pb2.SubmitScanRequest(
                player_id=self.player(n),
                hunt_id=self.hunt_id,
                tag_id=cp.tag_id,
                location=common_pb2.GeoPoint(lat=cp.location.lat, lon=cp.location.lon),
                accuracy_m=5.0,
                scanned_at=at,
                client_scan_id=f"c{n}",
            ),
            metadata=self.metadata,
            timeout=10,
        )
        if reply.status == scan_pb2.SCAN_STATUS_RECEIVED:
            return "pending"
        return scan_pb2.ScanOutcome.Name(reply.outcome).removeprefix("SCAN_OUTCOME_").lower()


class TileTarget:
    """GetTile of every cell of a GRID x GRID hunt in a shuffled order, over
    and over (so `--warmup` GRID x GRID calls touch each tile once);
    `known_version` 0 asks for the tile itself, the tiles' version gets "not
    modified"."""

    def __init__(self, channels: list[grpc.aio.Channel], hunt_id: str, grid: int,
                 known_version: int, token: str, per_call: int = 1) -> None:  # fmt: skip
        self.stubs = [geo_pb2_grpc.GeoServiceStub(c) for c in channels]
        self.metadata = bearer_metadata(token)
        self.hunt_id, self.known_version, self.per_call = hunt_id, known_version, per_call
        self.grid = grid
        self.cells = [(x, y) for x in range(grid) for y in range(grid)]
        random.Random(5).shuffle(self.cells)
        self.n = 0

    def player(self, n: int) -> str:
        return ""

    async def call(self) -> str:
        self.n += 1
        if self.per_call > 1:
            return await self._many()
        x, y = self.cells[self.n % len(self.cells)]
        reply = await self.stubs[self.n % len(self.stubs)].GetTile(
            geo_pb2.GetTileRequest(
                hunt_id=self.hunt_id, x=x, y=y, known_version=self.known_version
            ),
            metadata=self.metadata,
            timeout=10,
        )
        return "not_modified" if reply.not_modified else "full"

    async def _many(self) -> str:
        """GetTiles of a per_call-cell block (a map's view), from the next cell on."""
        side = max(1, round(self.per_call**0.5))
        x0, y0 = self.cells[self.n % len(self.cells)]
        refs = [geo_pb2.TileRef(x=(x0 + i % side) % self.grid, y=(y0 + i // side) % self.grid,
                                known_version=self.known_version)
                for i in range(self.per_call)]  # fmt: skip
        reply = await self.stubs[self.n % len(self.stubs)].GetTiles(
            geo_pb2.GetTilesRequest(hunt_id=self.hunt_id, cells=refs),
            metadata=self.metadata,
            timeout=10,
        )
        return "not_modified" if all(t.not_modified for t in reply.tiles) else "full"


class EchoTarget:
    def __init__(self, channels: list[grpc.aio.Channel]) -> None:
        self.echoes = [c.unary_unary(ECHO_METHOD) for c in channels]
        self.payload = b"x" * 160  # about the size of a SubmitScanRequest
        self.n = 0

    def player(self, n: int) -> str:
        return ""

    async def call(self) -> str:
        self.n += 1
        await self.echoes[self.n % len(self.echoes)](self.payload, timeout=10)
        return "ok"


class Split:
    """The latencies of accepted and shed calls apart, and the shed players."""

    def __init__(self) -> None:
        self.accepted: list[float] = []
        self.shed: list[float] = []
        self.dropped: list[float] = []
        #: Players of shed and dropped scans: none of them may be recorded.
        self.shed_players: list[str] = []

    def summary(self, elapsed_s: float) -> dict:
        accepted, shed, dropped = sorted(self.accepted), sorted(self.shed), sorted(self.dropped)
        return {
            "accepted": len(accepted),
            "goodput_per_s": len(accepted) / elapsed_s,
            "accepted_p50_ms": percentile(accepted, 50) * 1000,
            "accepted_p99_ms": percentile(accepted, 99) * 1000,
            "shed": len(shed),
            "shed_p99_ms": percentile(shed, 99) * 1000,
            "dropped": len(dropped),
            "dropped_p99_ms": percentile(dropped, 99) * 1000,
        }


def retry_hint_s(err: grpc.aio.AioRpcError) -> float:
    """The RetryInfo delay of a refused call (0 without one)."""
    for key, value in err.trailing_metadata() or ():
        if key != "grpc-status-details-bin":
            continue
        for detail in status_pb2.Status.FromString(value).details:
            hint = error_details_pb2.RetryInfo()
            if detail.Unpack(hint):
                return hint.retry_delay.ToTimedelta().total_seconds()
    return 0.0


async def _one(target, recorder: Recorder, started: float, split: Split | None = None) -> float:
    """One call, recorded; the retry hint of a refusal (s), else 0."""
    n = target.n + 1  # the call's number, as target.call() takes it
    hint = 0.0
    try:
        outcome = await target.call()
    except grpc.aio.AioRpcError as err:
        outcome = f"error:{err.code().name}"
        hint = DROPPED_BACKOFF_S if outcome == DROPPED else retry_hint_s(err)
    took = time.perf_counter() - started
    recorder.record(took, outcome)
    if split is None:
        return hint
    if not outcome.startswith("error:"):
        split.accepted.append(took)
    elif outcome in SHED or outcome == DROPPED:
        (split.shed if outcome in SHED else split.dropped).append(took)
        split.shed_players.append(target.player(n))
    return hint


async def open_loop(
    target, rate: float, duration: float, split: Split, requests: int | None = None
) -> tuple[Recorder, float]:
    recorder = Recorder()
    interval = 1.0 / rate
    begin = time.perf_counter()
    pending: set[asyncio.Task] = set()
    total = requests or int(rate * duration)
    for i in range(total):
        scheduled = begin + i * interval
        # The loop's timers are coarse (1 ms) and may fire early: never send early.
        while (delay := scheduled - time.perf_counter()) > 0:  # noqa: ASYNC110 - a clock, not an event
            await asyncio.sleep(delay)
        task = asyncio.ensure_future(_one(target, recorder, scheduled, split))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.wait(pending, timeout=30)
    # Elapsed until the last answer, not the last send: an overloaded run's
    # backlog is answered after the sending stops, over that longer time.
    return recorder, time.perf_counter() - begin


async def closed_loop(
    target, concurrency: int, duration: float, split: Split
) -> tuple[Recorder, float]:
    recorder = Recorder()
    begin = time.perf_counter()
    end = begin + duration

    async def worker() -> None:
        # As a client should: a refused call is retried after its hint.
        while time.perf_counter() < end:
            hint = await _one(target, recorder, time.perf_counter(), split)
            if hint:
                await asyncio.sleep(min(hint, max(0.0, end - time.perf_counter())))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return recorder, time.perf_counter() - begin


def channel(addr: str) -> grpc.aio.Channel:
    """A channel on a TCP connection of its own."""
    return channels(addr, 1)[0]


def channels(addr: str, n: int) -> list[grpc.aio.Channel]:
    """n channels, each on its own TCP connection: gRPC shares a connection
    between channels to the same target unless each keeps its own pool. An
    address list (`ipv4:a:p,b:q`, replicas) is balanced round-robin."""
    options: list[tuple[str, object]] = [("grpc.use_local_subchannel_pool", 1)]
    if "," in addr:
        options.append(("grpc.service_config", json.dumps(BALANCING)))
    return [grpc.aio.insecure_channel(addr, options=options) for _ in range(n)]


async def main_async(args: argparse.Namespace) -> dict:
    warmup = max(args.warmup, args.connections) if args.warmup else 0  # --warmup 0: none at all
    opened = channels(args.addr, args.connections)
    try:
        if args.target == "scan":
            target = ScanTarget(opened, args.hunt_file, args.token)
        elif args.target == "tile":
            target = TileTarget(opened, args.tile_hunt, args.tile_grid, args.known_version,
                                args.token, args.tiles_per_call)  # fmt: skip
        else:
            target = EchoTarget(opened)
        # Connected before the clock starts: a client's own handshake is not the server's cost.
        await asyncio.gather(*(channel.channel_ready() for channel in opened))
        # warm-up: every connection, caches, prepared statements
        for _ in range(warmup):
            await _one(target, Recorder(), time.perf_counter())
        split = Split()
        if args.rate:
            recorder, elapsed = await open_loop(
                target, args.rate, args.duration, split, args.requests
            )
            mode = {"mode": "open", "offered_rate": args.rate}
        else:
            recorder, elapsed = await closed_loop(target, args.concurrency, args.duration, split)
            mode = {"mode": "closed", "concurrency": args.concurrency}
    finally:
        for channel in opened:
            await channel.close()
    summary = {**recorder.summary(elapsed), **split.summary(elapsed)}
    errors = sum(v for k, v in summary["outcomes"].items() if k.startswith("error:"))
    # Achieved: answers without an error, per second (an overloaded run's
    # errors are not throughput). Latencies cover every call, errors too.
    summary["rate_per_s"] = (summary["count"] - errors) / elapsed
    return {"target": args.target, **mode, "connections": args.connections, "duration_s": round(elapsed, 3),
            "warmup": warmup, "errors": errors, **summary,
            "shed_players": split.shed_players if args.target == "scan" else [],
            "latencies_ms": [round(v * 1000, 3) for v in recorder.latencies] if args.keep_latencies else None}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.loadgen", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--target", choices=("scan", "tile", "echo"), required=True)
    parser.add_argument("--addr", required=True)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--rate", type=float, help="open loop: requests per second")
    group.add_argument("--concurrency", type=int, help="closed loop: requests in flight")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=1, help="client connections")
    parser.add_argument("--warmup", type=int, default=50, help="calls before the clock starts")
    parser.add_argument(
        "--requests", type=int, help="open loop: exactly this many calls (instead of --duration)"
    )
    parser.add_argument("--hunt-file", default="demo/lisbon.yaml")
    parser.add_argument("--token", default="local-client-token")
    parser.add_argument("--tile-hunt", default="tiles", help="tile: the hunt")
    parser.add_argument("--tile-grid", type=int, default=100, help="tile: columns = rows")
    parser.add_argument("--known-version", type=int, default=0, help="tile: the version held")
    parser.add_argument("--tiles-per-call", type=int, default=1,
                        help="tile: more than 1: GetTiles of a square block of this many")  # fmt: skip
    parser.add_argument("--keep-latencies", action="store_true")
    args = parser.parse_args()
    result = uvloop.run(main_async(args))
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
