"""The festival simulator behind `make demo`.

Imports the Lisbon hunt (demo/lisbon.yaml) and lets simulated players walk
between its checkpoints at walking speed with GPS noise, scanning tags —
sometimes cheating (teleporting), scanning twice, scanning out of range, a
stray tag, or a tag of last month's ended hunt (demo/lisbon-warmup.yaml) —
for a set time. The terminal shows the live top 10 (from WatchTop), counts of
each outcome and latency percentiles; it ends with a summary. Ctrl-C stops it
cleanly.

Simulated time runs faster than real time (at most 10x, so every scan's
`scanned_at` stays within the server's 10-minute window) and players walk at
1.4 m/s in simulated time, so the speed check sees honest walkers as honest.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import signal
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from libs.auth import bearer_metadata
from libs.geometry import distance_m
from tools.huntctl import Ctl, client_channel, default_addr, load_hunt_file
from tools.stats import Recorder
from treasure.common.v1 import common_pb2
from treasure.leaderboard.v1 import leaderboard_pb2, leaderboard_pb2_grpc
from treasure.scan.v1 import scan_pb2, scan_pb2_grpc

REPO = Path(__file__).resolve().parents[1]
HUNT_FILE = REPO / "demo" / "lisbon.yaml"
#: An ended hunt: a stale app scanning its tag gets HUNT_NOT_ACTIVE.
ENDED_HUNT_FILE = REPO / "demo" / "lisbon-warmup.yaml"
WALK_MPS = 1.4
OUTCOME_NAMES = {
    v: k.removeprefix("SCAN_OUTCOME_").lower() for k, v in scan_pb2.ScanOutcome.items()
}


@dataclass(frozen=True)
class Checkpoint:
    tag_id: str
    name: str
    lat: float
    lon: float


def jitter(lat: float, lon: float, metres: float, rng: random.Random) -> tuple[float, float]:
    angle = rng.uniform(0, 2 * math.pi)
    dist = abs(rng.gauss(0, metres))
    return (
        lat + dist * math.cos(angle) / 111_195.0,
        lon + dist * math.sin(angle) / (111_195.0 * math.cos(math.radians(lat))),
    )


class Festival:
    def __init__(
        self,
        args: argparse.Namespace,
        checkpoints: list[Checkpoint],
        hunt_id: str,
        ended: tuple[str, Checkpoint] | None = None,
    ) -> None:
        self.args = args
        self.checkpoints = checkpoints
        self.hunt_id = hunt_id
        self.ended = ended
        self.metadata = bearer_metadata(args.client_token)
        self.recorder = Recorder()
        self.errors: dict[str, int] = {}
        self.board: list[tuple[int, str, int]] = []
        self.players_on_board = 0
        self.speedup = min(10.0, 1.0 + 540.0 / max(args.duration, 1.0))
        self.started = time.monotonic()
        self.sim_start = datetime.now(UTC) - timedelta(minutes=9)
        self.stop = asyncio.Event()
        self.run_id = uuid.uuid4().hex[:6]

    def sim_now(self) -> datetime:
        return self.sim_start + timedelta(seconds=(time.monotonic() - self.started) * self.speedup)

    async def player(self, index: int, scan: scan_pb2_grpc.ScanServiceStub) -> None:
        rng = random.Random(index)
        player_id = f"player-{self.run_id}-{index:04d}"
        route = self.checkpoints[:]
        rng.shuffle(route)
        here = route[0]
        position = jitter(here.lat, here.lon, 20, rng)
        await asyncio.sleep(rng.uniform(0, 3))
        for target in route:
            if self.stop.is_set():
                return
            roll = rng.random()
            if roll >= 0.04:  # walk there (a teleporter does not)
                walk_s = distance_m(*position, target.lat, target.lon) / WALK_MPS
                if await self._sleep(walk_s / self.speedup):
                    return
            where = jitter(target.lat, target.lon, 6, rng)
            tag = target.tag_id
            hunt_id = self.hunt_id
            if roll < 0.04:  # teleport: scan the farthest checkpoint right away
                target = max(self.checkpoints, key=lambda c: distance_m(*position, c.lat, c.lon))
                where, tag = jitter(target.lat, target.lon, 6, rng), target.tag_id
            elif roll < 0.08:  # out of range: too far from the tag
                where = jitter(target.lat, target.lon, 5, rng)
                where = (where[0] + 250 / 111_195.0, where[1])
            elif roll < 0.10:  # a tag that is not in the hunt
                tag = f"stray-{rng.randrange(1000)}"
            elif roll < 0.12 and self.ended is not None:  # a stale app: last month's hunt
                hunt_id, stale = self.ended
                where, tag = jitter(stale.lat, stale.lon, 6, rng), stale.tag_id
            request = self.request(player_id, hunt_id, tag, where)
            await self.scan(scan, request)
            if rng.random() < 0.08:  # the app retries the same scan: the very same request
                await self.scan(scan, request, label="duplicate")
            if rng.random() < 0.05:  # the player scans the same tag again: a new scan
                await self.scan(scan, self.request(player_id, hunt_id, tag, where))
            if roll >= 0.04:
                position = where

    async def _sleep(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(self.stop.wait(), timeout=seconds)
            return True
        except TimeoutError:
            return False

    def request(
        self, player_id: str, hunt_id: str, tag_id: str, where: tuple[float, float]
    ) -> scan_pb2.SubmitScanRequest:
        """A new scan, now (simulated time), with its own client_scan_id."""
        scanned_at = Timestamp()
        scanned_at.FromDatetime(self.sim_now())
        return scan_pb2.SubmitScanRequest(
            player_id=player_id,
            hunt_id=hunt_id,
            tag_id=tag_id,
            location=common_pb2.GeoPoint(lat=where[0], lon=where[1]),
            accuracy_m=8.0,
            scanned_at=scanned_at,
            client_scan_id=f"c-{uuid.uuid4().hex[:12]}",
        )

    async def scan(
        self, stub, request: scan_pb2.SubmitScanRequest, label: str | None = None
    ) -> None:
        started = time.perf_counter()
        try:
            reply = await stub.SubmitScan(request, metadata=self.metadata, timeout=5)
        except grpc.aio.AioRpcError as err:
            self.recorder.record(time.perf_counter() - started, err.code().name.lower())
            return
        outcome = OUTCOME_NAMES.get(reply.outcome, "pending")
        if reply.status == scan_pb2.SCAN_STATUS_RECEIVED:
            outcome = "pending"
        self.recorder.record(time.perf_counter() - started, label or outcome)

    async def watch(self) -> None:
        async with client_channel(self.args.leaderboard_addr) as channel:
            stub = leaderboard_pb2_grpc.LeaderboardServiceStub(channel)
            while not self.stop.is_set():
                try:
                    call = stub.WatchTop(
                        leaderboard_pb2.WatchTopRequest(hunt_id=self.hunt_id, limit=10),
                        metadata=self.metadata,
                    )
                    async for update in call:
                        self.board = [(e.rank, e.player_id, e.total_points) for e in update.entries]
                        self.players_on_board = update.player_count
                except grpc.aio.AioRpcError:
                    await self._sleep(0.5)  # board being built; watch again

    def render(self, final: bool = False) -> str:
        elapsed = time.monotonic() - self.started
        s = self.recorder.summary(elapsed)
        lines = [
            f"Lisbon Festival Hunt — {self.args.players} players — {elapsed:5.1f}s / {self.args.duration:g}s"
            f" — simulated x{self.speedup:.0f} — {s.get('rate_per_s', 0):6.1f} scans/s",
            "",
            f"  latency  p50 {s['p50_ms']:6.1f} ms   p90 {s['p90_ms']:6.1f} ms   p99 {s['p99_ms']:6.1f} ms   max {s['max_ms']:6.1f} ms",
            "",
            "  outcomes: "
            + "  ".join(f"{k}={v}" for k, v in sorted(self.recorder.outcomes.items())),
            "",
            f"  top 10 ({self.players_on_board} on the board)",
        ]
        for rank, player, total in self.board:
            lines.append(f"   {rank:>3}. {player:<24} {total:>6}")
        return ("" if final else "\x1b[2J\x1b[H") + "\n".join(lines)

    async def run(self) -> dict:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop.set)
        async with client_channel(self.args.scan_addr) as channel:
            stub = scan_pb2_grpc.ScanServiceStub(channel)
            watcher = asyncio.ensure_future(self.watch())
            players = [
                asyncio.ensure_future(self.player(i, stub)) for i in range(self.args.players)
            ]
            deadline = self.started + self.args.duration
            while not self.stop.is_set() and time.monotonic() < deadline:
                if sys.stdout.isatty():
                    print(self.render(), flush=True)
                else:
                    s = self.recorder.summary(time.monotonic() - self.started)
                    print(f"{time.monotonic() - self.started:5.1f}s scans={s['count']} p50={s['p50_ms']:.1f}ms "
                          f"p99={s['p99_ms']:.1f}ms {dict(self.recorder.outcomes)}", flush=True)  # fmt: skip
                await self._sleep(1.0)
            self.stop.set()
            await asyncio.gather(*players, return_exceptions=True)
            await asyncio.sleep(0.5)  # the last board update
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        print(self.render(final=True))
        return self.recorder.summary(time.monotonic() - self.started)


async def main_async(args: argparse.Namespace) -> int:
    hunt, checkpoints, _ = load_hunt_file(Path(args.hunt_file))
    ended, ended_checkpoints, _ = load_hunt_file(ENDED_HUNT_FILE)
    for hunt_file in (args.hunt_file, str(ENDED_HUNT_FILE)):
        ctl_args = argparse.Namespace(
            token=args.admin_token, json=False, file=hunt_file, geo_addr=args.geo_addr,
            scan_addr=args.scan_addr, leaderboard_addr=args.leaderboard_addr,
        )  # fmt: skip
        ctl = Ctl(ctl_args)
        try:
            await ctl.import_()
        finally:
            await ctl.close()
    stale = ended_checkpoints[0]
    festival = Festival(
        args,
        [Checkpoint(c.tag_id, c.name, c.location.lat, c.location.lon) for c in checkpoints],
        hunt.hunt_id,
        ended=(
            ended.hunt_id,
            Checkpoint(stale.tag_id, stale.name, stale.location.lat, stale.location.lon),
        ),
    )
    summary = await festival.run()
    print(
        "\nsummary:", {k: (round(v, 2) if isinstance(v, float) else v) for k, v in summary.items()}
    )
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tools.demo", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--players", type=int, default=200)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds (default 60)")
    parser.add_argument("--hunt-file", default=str(HUNT_FILE))
    # Every replica `make up` started (huntctl.default_addr); the calls are balanced over them.
    parser.add_argument("--scan-addr", default=default_addr("scan"))
    parser.add_argument("--geo-addr", default=default_addr("geo"))
    parser.add_argument("--leaderboard-addr", default=default_addr("leaderboard"))
    parser.add_argument("--client-token", default="local-client-token")
    parser.add_argument("--admin-token", default="local-admin-token")
    args = parser.parse_args()
    try:
        sys.exit(asyncio.run(main_async(args)))
    except grpc.aio.AioRpcError as err:
        print(
            f"demo: {err.code().name}: {err.details()} (is the stack up? `make up`)",
            file=sys.stderr,
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
