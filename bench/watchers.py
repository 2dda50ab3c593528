"""The WatchTop load generator of `make bench`, run in its own process.

    python -m bench.watchers --leaderboard HOST:PORT --scan HOST:PORT --geo HOST:PORT
        --pid PID --metrics-port PORT [--streams N] [--rate R] [--duration S]

Creates a hunt of its own (geo, admin token), opens N WatchTop streams of its
top 10 over N / STREAMS_PER_CONNECTION client connections (the server takes
MAX_STREAMS concurrent streams per connection), and waits until every stream
has had its first board (a stream gRPC's core dropped at the opening burst
is opened again after a jittered backoff, as a client would: counted in
`stream_retries`). Then CLIMBERS players scan the hunt's checkpoints in
turn, open loop at R scans/s; after two warm-up rounds the climbers are the
whole top 10, so every scan changes every watcher's board.

For each scan and each watcher: the delay from the scan's acknowledgement
(SubmitScan answered, in this process) to the first board that watcher got
showing the scan's total (0 when the board came first: score's outbox can
deliver before the answer is back). SLOW_SHARE of the watchers read one
board every SLOW_READ_S and are reported apart: the latest board wins for
them, and the others must not wait for them.

Measured on the leaderboard process (by pid): CPU over the scanning window,
resident memory before the streams opened and once all had their first board
(bytes per watcher), and its `leaderboard_watch_reads_total` over the window
(reads of the board by the watcher loops: one per hunt per interval, whatever
the number of watchers). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import sys
import time
import urllib.request
import uuid
from datetime import UTC, datetime

import grpc
import uvloop

from bench.loadgen import channel
from bench.procstat import cpu_seconds, rss_bytes
from libs.auth import bearer_metadata
from libs.timestamps import timestamp
from tools.inprocess import checkpoint_message, hunt_message
from tools.stats import percentile
from treasure.common.v1 import common_pb2
from treasure.geo.v1 import geo_pb2, geo_pb2_grpc
from treasure.leaderboard.v1 import leaderboard_pb2, leaderboard_pb2_grpc
from treasure.scan.v1 import scan_pb2, scan_pb2_grpc

#: Streams per client connection (the services accept 1,000: libs/server.py).
STREAMS_PER_CONNECTION = 500
CLIMBERS = 10
#: Checkpoints of the hunt, 20 m apart on a line (a climber walks, never speeds).
CHECKPOINTS = 120
SPACING_DEG = 0.00018
ORIGIN = (38.7100, -9.1400)
#: What a watcher opens its stream again after, and how many times at most in a row.
RETRIED = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED,
           grpc.StatusCode.CANCELLED}  # fmt: skip
MAX_ATTEMPTS = 8
#: The watchers that read slowly, and how slowly.
SLOW_SHARE = 0.02
SLOW_READ_S = 2.0


class Watcher:
    """One WatchTop stream: what it saw of each climber, and when."""

    __slots__ = ("slow", "first", "seen", "boards", "error", "retries")

    def __init__(self, slow: bool) -> None:
        self.slow = slow
        self.first = asyncio.get_running_loop().create_future()
        #: climber -> [(total, first seen at)], totals rising
        self.seen: dict[str, list[tuple[int, float]]] = {}
        self.boards = 0
        self.error: str | None = None
        #: code -> how many times the stream was opened again after it
        self.retries: dict[str, int] = {}

    def on_board(self, board: leaderboard_pb2.WatchTopResponse) -> None:
        now = time.perf_counter()
        self.boards += 1
        for entry in board.entries:
            totals = self.seen.get(entry.player_id)
            if totals is None:
                self.seen[entry.player_id] = [(entry.total_points, now)]
            elif entry.total_points > totals[-1][0]:
                totals.append((entry.total_points, now))
        if not self.first.done():
            self.first.set_result(now)

    def saw_at(self, climber: str, total: int) -> float | None:
        """When this watcher first saw `climber` at `total` or more."""
        for seen_total, at in self.seen.get(climber, ()):
            if seen_total >= total:
                return at
        return None


async def watch(stub, hunt_id: str, watcher: Watcher, metadata, stop: asyncio.Event) -> None:
    """One watcher's stream, opened again (after a jittered backoff, as a
    client should) when the server refused or dropped it (UNAVAILABLE,
    RESOURCE_EXHAUSTED, or CANCELLED: gRPC's core drops calls past its queue
    of calls not yet taken when thousands open at once) or it broke."""
    rng = random.Random(id(watcher))
    attempt = 0
    while not stop.is_set():
        call = stub.WatchTop(leaderboard_pb2.WatchTopRequest(hunt_id=hunt_id, limit=10),
                             metadata=metadata)  # fmt: skip
        try:
            async for board in call:
                attempt = 0
                watcher.on_board(board)
                if stop.is_set():
                    return
                if watcher.slow:
                    await asyncio.sleep(SLOW_READ_S)
            return  # the server ended the stream
        except grpc.aio.AioRpcError as err:
            if stop.is_set():
                return
            if err.code() not in RETRIED or attempt >= MAX_ATTEMPTS:
                watcher.error = err.code().name
                if not watcher.first.done():
                    watcher.first.set_result(math.nan)
                return
            watcher.retries[err.code().name] = watcher.retries.get(err.code().name, 0) + 1
            await asyncio.sleep(rng.uniform(0.5, 1.5) * min(2.0, 0.1 * 2**attempt))
            attempt += 1
        finally:
            call.cancel()


def watch_reads(metrics_port: int) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read()
    for line in body.decode().splitlines():
        if line.startswith("leaderboard_watch_reads_total "):
            return float(line.split()[1])
    return 0.0


async def create_hunt(geo_addr: str, hunt_id: str, token: str) -> list[geo_pb2.Checkpoint]:
    async with channel(geo_addr) as ch:
        geo = geo_pb2_grpc.GeoServiceStub(ch)
        admin = bearer_metadata(token)
        await geo.CreateHunt(geo_pb2.CreateHuntRequest(hunt=hunt_message(hunt_id, origin=ORIGIN)),
                             metadata=admin)  # fmt: skip
        made = []
        for i in range(CHECKPOINTS):
            cp = checkpoint_message(
                f"w{i:03d}", hunt_id=hunt_id, tag_id=f"{hunt_id}-t{i:03d}",
                lat=ORIGIN[0] + 0.001 + i * SPACING_DEG, lon=ORIGIN[1] + 0.001, radius_m=10,
                points=10, first_finder_bonus=0,
            )  # fmt: skip
            reply = await geo.UpsertCheckpoint(
                geo_pb2.UpsertCheckpointRequest(checkpoint=cp), metadata=admin
            )
            made.append(reply.checkpoint)
        return made


class Climbers:
    """CLIMBERS players scanning the checkpoints in order, each in turn."""

    def __init__(self, scan_addr: str, hunt_id: str, checkpoints: list, token: str) -> None:
        self.channel = channel(scan_addr)
        self.stub = scan_pb2_grpc.ScanServiceStub(self.channel)
        self.metadata = bearer_metadata(token)
        self.hunt_id = hunt_id
        self.checkpoints = checkpoints
        run = uuid.uuid4().hex[:6]
        self.players = [f"climb-{run}-{i}" for i in range(CLIMBERS)]
        self.done = [0] * CLIMBERS
        self.n = 0
        #: (climber, total, acknowledged at) of the measured scans
        self.acks: list[tuple[str, int, float]] = []
        self.errors: dict[str, int] = {}

    async def scan(self, measured: bool) -> None:
        i = self.n % CLIMBERS
        self.n += 1
        cp = self.checkpoints[self.done[i] % len(self.checkpoints)]
        self.done[i] += 1
        at = timestamp(datetime.now(UTC))
        request = scan_pb2.SubmitScanRequest(
            player_id=self.players[i], hunt_id=self.hunt_id, tag_id=cp.tag_id,
            client_scan_id=uuid.uuid4().hex, location=common_pb2.GeoPoint(
                lat=cp.location.lat, lon=cp.location.lon), accuracy_m=5.0, scanned_at=at,
        )  # fmt: skip
        try:
            reply = await self.stub.SubmitScan(request, metadata=self.metadata, timeout=10)
        except grpc.aio.AioRpcError as err:
            self.errors[err.code().name] = self.errors.get(err.code().name, 0) + 1
            return
        acked = time.perf_counter()
        if measured and reply.outcome == scan_pb2.SCAN_OUTCOME_UNLOCKED and reply.total_points:
            self.acks.append((self.players[i], reply.total_points, acked))

    async def run(self, rate: float, count: int, measured: bool) -> None:
        begin = time.perf_counter()
        tasks = []
        for k in range(count):
            while (delay := begin + k / rate - time.perf_counter()) > 0:  # noqa: ASYNC110 - a clock
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(self.scan(measured)))
        await asyncio.gather(*tasks)


def _figures(values: list[float]) -> dict:
    ordered = sorted(values)
    return {
        "samples": len(ordered),
        "p50_ms": round(percentile(ordered, 50) * 1000, 2),
        "p99_ms": round(percentile(ordered, 99) * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2) if ordered else math.nan,
    }


async def main_async(args: argparse.Namespace) -> dict:
    hunt_id = f"watch-{uuid.uuid4().hex[:8]}"
    checkpoints = await create_hunt(args.geo, hunt_id, args.admin_token)
    climbers = Climbers(args.scan, hunt_id, checkpoints, args.token)
    await climbers.run(args.rate, 2 * CLIMBERS, measured=False)  # the climbers take the top 10

    rss_before = rss_bytes(args.pid)
    connections = [channel(args.leaderboard)
                   for _ in range(math.ceil(args.streams / STREAMS_PER_CONNECTION))]  # fmt: skip
    stubs = [leaderboard_pb2_grpc.LeaderboardServiceStub(c) for c in connections]
    metadata = bearer_metadata(args.token)
    slow_every = round(1 / SLOW_SHARE)
    watchers = [Watcher(slow=(i % slow_every == slow_every - 1)) for i in range(args.streams)]
    stop = asyncio.Event()
    opening = time.perf_counter()
    tasks = [asyncio.ensure_future(watch(stubs[i % len(stubs)], hunt_id, w, metadata, stop))
             for i, w in enumerate(watchers)]  # fmt: skip
    firsts = await asyncio.wait_for(asyncio.gather(*(w.first for w in watchers)), timeout=120)
    opened_s = time.perf_counter() - opening
    await asyncio.sleep(1.0)  # settled: the first boards sent, the opening's garbage collected
    rss_open = rss_bytes(args.pid)

    reads_before = watch_reads(args.metrics_port)
    cpu_before = cpu_seconds(args.pid)
    own_before = time.process_time()
    began = time.perf_counter()
    await climbers.run(args.rate, int(args.rate * args.duration), measured=True)
    await asyncio.sleep(2.0 + SLOW_READ_S)  # the last boards reach every watcher
    window = time.perf_counter() - began
    cpu = cpu_seconds(args.pid) - cpu_before
    own_cpu = time.process_time() - own_before
    reads = watch_reads(args.metrics_port) - reads_before
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for c in connections:
        await c.close()
    await climbers.channel.close()

    delays: dict[bool, list[float]] = {False: [], True: []}
    unseen = {False: 0, True: 0}
    for w in watchers:
        for climber, total, acked in climbers.acks:
            at = w.saw_at(climber, total)
            if at is None:
                unseen[w.slow] += 1
            else:
                delays[w.slow].append(max(0.0, at - acked))
    errors: dict[str, int] = {}
    retries: dict[str, int] = {}
    for w in watchers:
        if w.error:
            errors[w.error] = errors.get(w.error, 0) + 1
        for code, n in w.retries.items():
            retries[code] = retries.get(code, 0) + n
    normal = _figures(delays[False])
    return {
        "streams": args.streams,
        "connections": len(connections),
        "opened": sum(1 for f in firsts if not math.isnan(f)),
        "open_s": round(opened_s, 3),
        "scans": len(climbers.acks),
        "scan_rate_per_s": args.rate,
        "scan_errors": climbers.errors,
        "stream_errors": errors,
        "stream_retries": retries,
        "delay_p50_ms": normal["p50_ms"],
        "delay_p99_ms": normal["p99_ms"],
        "delay": normal,
        "unseen": unseen[False],
        "slow_watchers": sum(1 for w in watchers if w.slow),
        "slow_delay": _figures(delays[True]),
        "slow_unseen": unseen[True],
        "window_s": round(window, 3),
        "cpu_cores": round(cpu / window, 3),
        "loadgen_cpu_cores": round(own_cpu / window, 3),
        "board_reads": reads,
        "board_reads_per_s": round(reads / window, 2),
        "rss_before_bytes": rss_before,
        "rss_open_bytes": rss_open,
        "bytes_per_watcher": round((rss_open - rss_before) / args.streams),
        "boards_per_watcher": round(
            sum(w.boards for w in watchers if not w.slow)
            / max(1, sum(1 for w in watchers if not w.slow)),
            2,
        ),  # fmt: skip
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.watchers",
                                     description=__doc__.split("\n\n")[0])  # fmt: skip
    parser.add_argument("--leaderboard", required=True)
    parser.add_argument("--scan", required=True)
    parser.add_argument("--geo", required=True)
    parser.add_argument("--pid", type=int, required=True, help="the leaderboard's process")
    parser.add_argument("--metrics-port", type=int, required=True, help="the leaderboard's")
    parser.add_argument("--streams", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=2.0, help="scans per second")
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--token", default="local-client-token")
    parser.add_argument("--admin-token", default="local-admin-token")
    args = parser.parse_args()
    json.dump(uvloop.run(main_async(args)), sys.stdout)


if __name__ == "__main__":
    main()
