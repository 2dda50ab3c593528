"""The fault suite's instruments: a load of scans from inside the test, and
the accounting of what became of them, from Postgres.

`ScanLoad` is a set of mobile clients: `players` walk a hunt's checkpoints in
order and scan each one once, `scanned_at` being the moment of the first send
(so geo records every sighting). Checkpoints are built closer together than
the GPS accuracy of two fixes (`SPACING_M`), so no pace is implausible: every
scan must come out UNLOCKED. Scans go out at a steady offered rate (open loop:
one scan every 1/rate s, whatever the answers). Each scan has its own
`client_scan_id` and, like a real app, is sent again with the SAME id on
UNAVAILABLE, DEADLINE_EXCEEDED or CANCELLED (a call dropped unread past
capacity), with backoff, for up to `give_up_s`; any
other status ends it (counted by status).

Once the fault has healed and the load has stopped, `wait_drained()` waits
(bounded) until none of the hunt's scans is still 'received' and score's
outbox is empty; `account()` then counts from Postgres what was applied, lost
(an acknowledged scan that is not in `scan.scans`, still not applied, or
answered UNLOCKED without its unlock) and double-awarded (two unlocks of one
checkpoint by one player, an unlock scan id used twice, two UNLOCKED answers
for one checkpoint and player, an unlock without its scan, a total or count
that is not the sum of the unlocks, two first finders). `board_converged()`
measures when the leaderboard (GetTop, then GetRank per player) equals score's
totals in Postgres; `scores_disagree()` checks score's own GetScore (its hot
tier) against them.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import grpc

from libs.timestamps import timestamp
from tests.support.hunts import Spot
from tests.support.stack import CLIENT
from tools.stack import CHANNEL_OPTIONS
from tools.verify import read_board
from treasure.common.v1 import common_pb2
from treasure.leaderboard.v1 import leaderboard_pb2, leaderboard_pb2_grpc
from treasure.scan.v1 import scan_pb2, scan_pb2_grpc
from treasure.score.v1 import score_pb2, score_pb2_grpc

#: What a mobile client retries, with the same client_scan_id.
#: CANCELLED too: past capacity gRPC's core drops a call the scan process had
#: no room to queue (SCAN_GRPC_MAX_PENDING) before any handler sees it.
RETRYABLE = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
)
#: Checkpoints of a load's hunt are this far apart: less than two 5 m fixes'
#: accuracy, which the speed check gives the player, so any pace is plausible.
SPACING_M = 8.0
ACCURACY_M = 5.0
MAX_CHECKPOINTS = 50


@dataclass
class ClientScan:
    """One scan as the client saw it."""

    player_id: str
    checkpoint: int
    client_scan_id: str
    first_sent: float = 0.0
    ended: float = 0.0  # when the last attempt ended
    attempts: int = 0
    codes: list[str] = field(default_factory=list)  # status of each failed attempt
    reply: scan_pb2.SubmitScanResponse | None = None
    final_code: str = ""  # empty while in flight; "OK" once acknowledged

    @property
    def acknowledged(self) -> bool:
        return self.reply is not None and bool(self.reply.scan_id)


def plan(rate: float, seconds: float, min_players: int = 20) -> tuple[int, int]:
    """(players, checkpoints) so that `rate` scans/s for `seconds` (and half as
    long again) fit in one walk of at most MAX_CHECKPOINTS checkpoints, built
    `SPACING_M` apart (`tests.support.hunts.spots(..., spacing_m=SPACING_M)`)."""
    scans = int(rate * seconds * 1.5) + 1
    players = max(min_players, -(-scans // MAX_CHECKPOINTS))
    checkpoints = min(MAX_CHECKPOINTS, -(-scans // players) + 1)
    return players, checkpoints


def scan_request(
    player_id: str, hunt_id: str, spot: Spot, client_scan_id: str
) -> scan_pb2.SubmitScanRequest:
    """A scan of `spot` now, from where it is, with a fix of ACCURACY_M."""
    return scan_pb2.SubmitScanRequest(
        player_id=player_id,
        hunt_id=hunt_id,
        tag_id=spot.tag_id,
        location=common_pb2.GeoPoint(lat=spot.lat, lon=spot.lon),
        accuracy_m=ACCURACY_M,
        scanned_at=timestamp(datetime.now(UTC)),
        client_scan_id=client_scan_id,
    )


async def capacity(
    target: str, hunt_id: str, spot: Spot, *, seconds: float = 2.0, in_flight: int = 16
) -> float:
    """The stack's rate right now: answered SubmitScans per second, from
    `in_flight` at a time (each from a new player at `spot`, refused calls
    not counted). Only to size an overload, never asserted on."""
    channel = grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
    stub = scan_pb2_grpc.ScanServiceStub(channel)
    answered = 0
    end = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal answered
        while time.monotonic() < end:
            request = scan_request(f"cap-{uuid.uuid4().hex[:12]}", hunt_id, spot, "c1")
            try:
                await stub.SubmitScan(request, metadata=CLIENT, timeout=2.0)
                answered += 1
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.01)

    try:
        await asyncio.gather(*(worker() for _ in range(in_flight)))
    finally:
        await channel.close()
    return answered / seconds


async def scan_once(
    target: str, hunt_id: str, spot: Spot, player_id: str
) -> scan_pb2.SubmitScanResponse:
    """One scan of `spot` by `player_id`, retried with its key as a client would."""
    channel = grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
    request = scan_request(player_id, hunt_id, spot, uuid.uuid4().hex)
    try:
        for attempt in range(20):
            try:
                return await scan_pb2_grpc.ScanServiceStub(channel).SubmitScan(
                    request, metadata=CLIENT, timeout=2.0
                )
            except grpc.aio.AioRpcError as err:
                if err.code() not in RETRYABLE or attempt == 19:
                    raise
                await asyncio.sleep(0.1)
        raise AssertionError("unreachable")
    finally:
        await channel.close()


class Watcher:
    """A WatchTop client that, like a real one, watches again when its
    stream ends (its leaderboard went away): the latest board it saw, and
    how often it had to reconnect."""

    def __init__(
        self,
        board: leaderboard_pb2_grpc.LeaderboardServiceStub,
        hunt_id: str,
        metadata: tuple[tuple[str, str], ...],
    ) -> None:
        self._board = board
        self._hunt_id = hunt_id
        self._metadata = metadata
        self.scores: dict[str, int] = {}
        self.reconnects = 0
        self.first = asyncio.Event()  # set by the first update
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._watch())

    def score_of(self, player_id: str) -> int | None:
        return self.scores.get(player_id)

    async def _watch(self) -> None:
        while True:
            call = self._board.WatchTop(
                leaderboard_pb2.WatchTopRequest(hunt_id=self._hunt_id, limit=100),
                metadata=self._metadata,
            )
            try:
                async for update in call:
                    self.scores = {e.player_id: e.total_points for e in update.entries}
                    self.first.set()
            except grpc.aio.AioRpcError as err:
                if err.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                    raise
            self.reconnects += 1
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class ScanLoad:
    """Scans at a steady offered rate from `players` walking `spots`."""

    def __init__(
        self,
        target: str,
        hunt_id: str,
        spots: list[Spot],
        players: list[str],
        *,
        rate: float = 40.0,
        call_timeout_s: float = 2.0,
        give_up_s: float = 30.0,
    ) -> None:
        self._target = target
        self._hunt_id = hunt_id
        self._spots = spots
        self._players = players
        self._rate = rate
        self._call_timeout_s = call_timeout_s
        self._give_up_s = give_up_s
        self.scans: list[ClientScan] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._channel: grpc.aio.Channel | None = None
        self._stop = asyncio.Event()

    def start(self) -> ScanLoad:
        self._channel = grpc.aio.insecure_channel(self._target, options=CHANNEL_OPTIONS)
        self._ticker = asyncio.create_task(self._tick(), name="scan-load")
        return self

    async def stop(self, timeout_s: float | None = None) -> None:
        """Stops sending new scans; waits for those in flight (retrying) to end."""
        self._stop.set()
        if self._ticker is not None:
            await self._ticker
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s or self._give_up_s + 10)
        unfinished = list(self._tasks)  # counted as failed, IN_FLIGHT
        for task in unfinished:
            task.cancel()
        await asyncio.gather(*unfinished, return_exceptions=True)
        if self._channel is not None:
            await self._channel.close()

    async def _tick(self) -> None:
        stub = scan_pb2_grpc.ScanServiceStub(self._channel)
        started = time.monotonic()
        capacity = len(self._players) * len(self._spots)
        for i in range(capacity):
            due = started + i / self._rate
            delay = due - time.monotonic()
            if delay > 0:
                try:
                    await asyncio.wait_for(self._stop.wait(), delay)
                except TimeoutError:
                    pass
            if self._stop.is_set():
                return
            scan = ClientScan(
                player_id=self._players[i % len(self._players)],
                checkpoint=i // len(self._players),
                client_scan_id=f"c-{uuid.uuid4().hex[:16]}",
            )
            self.scans.append(scan)
            task = asyncio.create_task(self._send(stub, scan))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, stub: scan_pb2_grpc.ScanServiceStub, scan: ClientScan) -> None:
        spot = self._spots[scan.checkpoint]
        # retries send the same scan (its scanned_at included)
        request = scan_request(scan.player_id, self._hunt_id, spot, scan.client_scan_id)
        scan.first_sent = time.monotonic()
        give_up = scan.first_sent + self._give_up_s
        backoff = 0.05
        while True:
            scan.attempts += 1
            try:
                scan.reply = await stub.SubmitScan(
                    request, metadata=CLIENT, timeout=self._call_timeout_s
                )
                scan.ended = time.monotonic()
                scan.final_code = "OK"
                return
            except grpc.aio.AioRpcError as err:
                scan.ended = time.monotonic()
                code = err.code()
                scan.codes.append(code.name)
                if code not in RETRYABLE:
                    scan.final_code = code.name
                    return
                if time.monotonic() + backoff > give_up:
                    scan.final_code = f"GAVE_UP({code.name})"
                    return
            await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
            backoff = min(backoff * 2, 1.0)

    # -- what the clients saw ------------------------------------------------------

    @property
    def sent(self) -> int:
        return len(self.scans)

    @property
    def acknowledged(self) -> list[ClientScan]:
        return [s for s in self.scans if s.acknowledged]

    @property
    def deferred(self) -> int:
        """Acknowledged as recorded but not applied yet (status RECEIVED)."""
        return sum(1 for s in self.acknowledged if s.reply.status == scan_pb2.SCAN_STATUS_RECEIVED)

    @property
    def retried(self) -> int:
        return sum(1 for s in self.scans if s.attempts > 1)

    @property
    def failed(self) -> Counter[str]:
        """Scans that ended without an acknowledgement, by their last status."""
        return Counter(s.final_code or "IN_FLIGHT" for s in self.scans if not s.acknowledged)

    def slowest(self, since: float, n: int = 5) -> list[str]:
        """The `n` scans that ended last (seconds after `since`), for a failure report."""
        ended = sorted(self.scans, key=lambda s: s.ended, reverse=True)[:n]
        return [
            f"sent {s.first_sent - since:+.2f}s, ended {s.ended - since:+.2f}s after "
            f"{s.attempts} attempts {s.codes[-3:]} -> {s.final_code or 'in flight'}"
            + (f" {scan_pb2.ScanStatus.Name(s.reply.status)}" if s.reply else "")
            for s in ended
        ]

    @property
    def errors_seen(self) -> Counter[str]:
        """Every failed attempt, by status (retried ones included)."""
        return Counter(code for s in self.scans for code in s.codes)


# -- accounting -------------------------------------------------------------------


@dataclass
class Accounting:
    applied: int = 0
    recorded: int = 0
    #: Applied scans by outcome (the load's walk makes every one UNLOCKED).
    outcomes: Counter[str] = field(default_factory=Counter)
    lost: list[str] = field(default_factory=list)
    double: list[str] = field(default_factory=list)
    #: Other broken promises (an answer that changed on a retry, ...).
    problems: list[str] = field(default_factory=list)


async def wait_drained(
    db: asyncpg.Pool, hunt_id: str, timeout_s: float = 30.0
) -> tuple[bool, int, int]:
    """Waits until none of the hunt's scans is still 'received' and score's
    outbox holds none of its rows; (drained, received left, outbox rows left)."""
    deadline = time.monotonic() + timeout_s
    while True:
        received = await db.fetchval(
            "SELECT count(*) FROM scan.scans WHERE hunt_id = $1 AND status = 'received'", hunt_id
        )
        outbox = await db.fetchval("SELECT count(*) FROM score.outbox WHERE hunt_id = $1", hunt_id)
        if received == 0 and outbox == 0:
            return True, 0, 0
        if time.monotonic() > deadline:
            return False, received, outbox
        await asyncio.sleep(0.1)


_OUTCOME = {v: k.removeprefix("SCAN_OUTCOME_").lower() for k, v in scan_pb2.ScanOutcome.items()}


async def account(db: asyncpg.Pool, hunt_id: str, load: ScanLoad) -> Accounting:
    """What became of the load's scans, from Postgres (call after `wait_drained`)."""
    result = Accounting()
    scans = await db.fetch(
        """SELECT scan_id, player_id, client_scan_id, status, outcome, points_awarded,
                  checkpoint_id
           FROM scan.scans WHERE hunt_id = $1""",
        hunt_id,
    )
    unlocks = await db.fetch(
        """SELECT scan_id, player_id, checkpoint_id, points_awarded, first_finder
           FROM score.unlocks WHERE hunt_id = $1""",
        hunt_id,
    )
    totals = await db.fetch(
        "SELECT player_id, total, found FROM score.player_scores WHERE hunt_id = $1", hunt_id
    )
    first_finds = await db.fetch(
        "SELECT checkpoint_id, count(*) AS n FROM score.first_finds WHERE hunt_id = $1 GROUP BY 1",
        hunt_id,
    )
    result.recorded = len(scans)
    result.applied = sum(1 for s in scans if s["status"] == "applied")
    result.outcomes = Counter(s["outcome"] for s in scans if s["status"] == "applied")
    by_id = {s["scan_id"]: s for s in scans}
    unlock_by_scan = {u["scan_id"]: u for u in unlocks}

    # Lost: an acknowledged scan missing, never applied, or UNLOCKED without its unlock.
    for client in load.acknowledged:
        reply = client.reply
        row = by_id.get(reply.scan_id)
        if row is None:
            result.lost.append(f"{reply.scan_id} ({client.client_scan_id}) is not in scan.scans")
            continue
        if (row["player_id"], row["client_scan_id"]) != (client.player_id, client.client_scan_id):
            result.problems.append(f"{reply.scan_id} belongs to another scan")
        if row["status"] != "applied":
            result.lost.append(f"{reply.scan_id} acknowledged but never applied")
            continue
        if row["outcome"] == "unlocked" and reply.scan_id not in unlock_by_scan:
            result.lost.append(f"{reply.scan_id} answered UNLOCKED but score has no unlock")
        answered = _OUTCOME[reply.outcome]
        if reply.status == scan_pb2.SCAN_STATUS_APPLIED and answered != row["outcome"]:
            result.problems.append(
                f"{reply.scan_id} answered {answered}, recorded {row['outcome']}"
            )

    # Double-awarded.
    per_checkpoint = Counter((u["player_id"], u["checkpoint_id"]) for u in unlocks)
    for (player, checkpoint), n in per_checkpoint.items():
        if n > 1:
            result.double.append(f"{player} unlocked {checkpoint} {n} times")
    for scan_id, n in Counter(u["scan_id"] for u in unlocks).items():
        if n > 1:
            result.double.append(f"scan {scan_id} awarded {n} unlocks")
    unlocked_answers = Counter(
        (s["player_id"], s["checkpoint_id"]) for s in scans if s["outcome"] == "unlocked"
    )
    for (player, checkpoint), n in unlocked_answers.items():
        if n > 1:
            result.double.append(f"{player} was answered UNLOCKED for {checkpoint} {n} times")
    for scan_id in unlock_by_scan.keys() - by_id.keys():
        result.double.append(f"unlock of {scan_id}, a scan the scan log does not have")
    sums: dict[str, tuple[int, int]] = {}
    for u in unlocks:
        total, found = sums.get(u["player_id"], (0, 0))
        sums[u["player_id"]] = (total + u["points_awarded"], found + 1)
    for row in totals:
        expected = sums.get(row["player_id"], (0, 0))
        if (row["total"], row["found"]) != expected:
            result.double.append(
                f"{row['player_id']}: total {row['total']}/{row['found']}, "
                f"unlocks sum to {expected[0]}/{expected[1]}"
            )
    for row in first_finds:
        if row["n"] > 1:
            result.double.append(f"{row['checkpoint_id']} has {row['n']} first finders")
    return result


# -- the leaderboard against the truth ---------------------------------------------


async def truth(db: asyncpg.Pool, hunt_id: str) -> dict[str, int]:
    rows = await db.fetch(
        "SELECT player_id, total FROM score.player_scores WHERE hunt_id = $1", hunt_id
    )
    return {r["player_id"]: r["total"] for r in rows}


async def ranks_agree(channel: grpc.aio.Channel, hunt_id: str, totals: dict[str, int]) -> bool:
    """Whether GetRank gives every player their total (and the player count)."""
    stub = leaderboard_pb2_grpc.LeaderboardServiceStub(channel)
    ranks = await asyncio.gather(
        *(
            stub.GetRank(
                leaderboard_pb2.GetRankRequest(hunt_id=hunt_id, player_id=player_id),
                metadata=CLIENT,
                timeout=2,
            )
            for player_id in totals
        )
    )
    return all(
        rank.total_points == total and rank.player_count == len(totals)
        for rank, total in zip(ranks, totals.values(), strict=True)
    )


async def scores_disagree(
    channel: grpc.aio.Channel, hunt_id: str, totals: dict[str, int]
) -> list[str]:
    """Players whose GetScore (score's hot tier, or Postgres on a miss) is not
    their total in Postgres."""
    stub = score_pb2_grpc.ScoreServiceStub(channel)
    replies = await asyncio.gather(
        *(
            stub.GetScore(
                score_pb2.GetScoreRequest(hunt_id=hunt_id, player_id=player_id),
                metadata=CLIENT,
                timeout=2,
            )
            for player_id in totals
        )
    )
    return [
        f"{player_id}: GetScore {reply.total_points}, Postgres {total}"
        for (player_id, total), reply in zip(totals.items(), replies, strict=True)
        if reply.total_points != total
    ]


@dataclass
class Convergence:
    at: float | None  # time.monotonic() when the board first equalled Postgres
    last_difference: str = ""


async def board_converged(
    channel: grpc.aio.Channel, db: asyncpg.Pool, hunt_id: str, timeout_s: float
) -> Convergence:
    """Polls until the leaderboard (GetTop, then GetRank for every player)
    equals score's totals in Postgres; when it first did, or the last
    difference seen when it did not within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    difference = ""
    while True:
        expected = await truth(db, hunt_id)
        try:
            board = await read_board(channel, CLIENT, hunt_id, timeout_s=2)
            if board == expected and await ranks_agree(channel, hunt_id, expected):
                return Convergence(time.monotonic())
            wrong = {p for p in expected.keys() | board.keys() if board.get(p) != expected.get(p)}
            difference = f"{len(wrong)} players differ, e.g. " + ", ".join(
                f"{p}: board {board.get(p)} score {expected.get(p)}" for p in sorted(wrong)[:3]
            )
        except grpc.aio.AioRpcError as err:
            difference = f"leaderboard: {err.code().name}: {err.details()}"
        if time.monotonic() > deadline:
            return Convergence(None, difference)
        await asyncio.sleep(0.05)


# -- the table ----------------------------------------------------------------------


@dataclass
class FaultRow:
    fault: str
    sent: int
    acknowledged: int
    deferred: int
    retried: int
    failed: str
    applied: int
    unlocked: int
    lost: int
    double: int
    converge_s: float | None
    drain_s: float | None
    verdict: str


TABLE: list[FaultRow] = []

_HEADER = (
    "| fault | sent | acknowledged | of which deferred | retried | failed | applied "
    "| of which unlocked | lost | double-awarded | board = Postgres after heal (s) "
    "| all applied after heal (s) | verdict |\n"
    "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n"
)


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f}"


def render(rows: list[FaultRow]) -> str:
    lines = [
        f"| {r.fault} | {r.sent} | {r.acknowledged} | {r.deferred} | {r.retried} "
        f"| {r.failed or '0'} | {r.applied} | {r.unlocked} | {r.lost} | {r.double} "
        f"| {_seconds(r.converge_s)} "
        f"| {_seconds(r.drain_s)} | {r.verdict} |"
        for r in rows
    ]
    return _HEADER + "\n".join(lines) + "\n"


def write_table(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "# Fault suite (tests/e2e/test_faults.py)\n\n"
        "Per fault: scans sent by the in-test clients, acknowledged (OK with a scan_id; "
        "'deferred' = acknowledged as recorded, applied later by the relay), retried with "
        "the same client_scan_id, failed (no acknowledgement, by last status), applied "
        "(in scan.scans; each should be UNLOCKED: every player scans every checkpoint "
        "once, at a plausible pace), lost and double-awarded (must be 0), seconds from "
        "the heal until the leaderboard equalled score's totals in Postgres (must be "
        "<= 5) and until the last scan was applied (the load goes on 1 s after the "
        "heal).\n\n" + render(TABLE)
    )
