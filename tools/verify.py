"""The invariant checker (`huntctl verify HUNT`, `make check`): what a game
studio is promised, checked against the truth in Postgres.

1. every scan is applied, or still 'received' for less than a grace period
   (being applied); a scan stuck 'received' longer is reported;
2. every applied UNLOCKED scan has exactly its unlock in score (same points),
   and every unlock comes from such a scan: nothing lost, nothing twice;
3. each player's total and count in score equal the sum of their unlocks;
4. no checkpoint has two first finders;
5. the leaderboard's totals equal score's, player for player.

Each difference is printed; the exit status is non-zero when there is one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg
import grpc

from treasure.leaderboard.v1 import leaderboard_pb2, leaderboard_pb2_grpc


@dataclass
class Report:
    hunt_id: str
    counts: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


async def read_board(
    channel: grpc.aio.Channel, metadata, hunt_id: str, timeout_s: float = 30.0
) -> dict[str, int]:
    """Every player's total on the hunt's leaderboard, page by page (GetTop)."""
    stub = leaderboard_pb2_grpc.LeaderboardServiceStub(channel)
    board: dict[str, int] = {}
    token = ""
    while True:
        page = await stub.GetTop(
            leaderboard_pb2.GetTopRequest(hunt_id=hunt_id, limit=1000, page_token=token),
            metadata=metadata,
            timeout=timeout_s,
        )
        for entry in page.entries:
            board[entry.player_id] = entry.total_points
        token = page.next_page_token
        if not token:
            return board


async def verify(
    hunt_id: str,
    scan_dsn: str,
    score_dsn: str,
    leaderboard: grpc.aio.Channel | None,
    metadata,
    grace_s: float = 60.0,
) -> Report:
    report = Report(hunt_id)
    scan_db = await asyncpg.connect(scan_dsn)
    score_db = await asyncpg.connect(score_dsn)
    try:
        scans = await scan_db.fetch(
            """SELECT scan_id, player_id, status, outcome, points_awarded,
                      extract(epoch FROM now() - received_at) AS age
               FROM scan.scans WHERE hunt_id = $1""",
            hunt_id,
        )
        unlocks = await score_db.fetch(
            "SELECT scan_id, player_id, checkpoint_id, points_awarded, first_finder FROM score.unlocks WHERE hunt_id = $1",
            hunt_id,
        )
        totals = await score_db.fetch(
            "SELECT player_id, total, found FROM score.player_scores WHERE hunt_id = $1", hunt_id
        )
    finally:
        await scan_db.close()
        await score_db.close()

    report.counts = {
        "scans": len(scans),
        "applied": sum(s["status"] == "applied" for s in scans),
        "received": sum(s["status"] == "received" for s in scans),
        "unlocks": len(unlocks),
        "players": len(totals),
    }
    for scan in scans:
        if scan["status"] == "received" and scan["age"] > grace_s:
            report.problems.append(
                f"scan {scan['scan_id']} still not applied after {scan['age']:.0f}s"
            )

    unlock_by_scan = {u["scan_id"]: u for u in unlocks}
    unlocked_scans = {s["scan_id"]: s for s in scans if s["outcome"] == "unlocked"}
    for scan_id, scan in unlocked_scans.items():
        unlock = unlock_by_scan.get(scan_id)
        if unlock is None:
            report.problems.append(
                f"scan {scan_id} answered UNLOCKED but score has no unlock for it"
            )
        elif unlock["points_awarded"] != scan["points_awarded"]:
            report.problems.append(
                f"scan {scan_id} answered {scan['points_awarded']} points, score awarded {unlock['points_awarded']}"
            )
    status = {s["scan_id"]: s["status"] for s in scans}
    for scan_id in unlock_by_scan:
        if scan_id not in status:
            report.problems.append(f"unlock of scan {scan_id} has no scan in the scan log")
        elif scan_id not in unlocked_scans and status[scan_id] == "applied":
            report.problems.append(
                f"unlock of scan {scan_id}, but the scan was not answered UNLOCKED"
            )

    sums: dict[str, tuple[int, int]] = {}
    first: dict[str, int] = {}
    for unlock in unlocks:
        total, found = sums.get(unlock["player_id"], (0, 0))
        sums[unlock["player_id"]] = (total + unlock["points_awarded"], found + 1)
        if unlock["first_finder"]:
            first[unlock["checkpoint_id"]] = first.get(unlock["checkpoint_id"], 0) + 1
    for checkpoint_id, finders in first.items():
        if finders > 1:
            report.problems.append(f"checkpoint {checkpoint_id} has {finders} first finders")
    score_totals = {t["player_id"]: t["total"] for t in totals}
    for row in totals:
        expected = sums.get(row["player_id"], (0, 0))
        if (row["total"], row["found"]) != expected:
            report.problems.append(
                f"player {row['player_id']}: total {row['total']}/{row['found']} found, unlocks sum to {expected[0]}/{expected[1]}"
            )
    for player_id in sums.keys() - score_totals.keys():
        report.problems.append(f"player {player_id} has unlocks but no total")

    if leaderboard is not None:
        try:
            board = await read_board(leaderboard, metadata, hunt_id)
        except grpc.aio.AioRpcError as err:
            report.problems.append(f"leaderboard unreadable: {err.code().name}: {err.details()}")
        else:
            report.counts["on_board"] = len(board)
            for player_id, total in score_totals.items():
                if board.get(player_id) != total:
                    report.problems.append(
                        f"player {player_id}: score {total}, leaderboard {board.get(player_id)}"
                    )
            for player_id in board.keys() - score_totals.keys():
                report.problems.append(f"player {player_id} is on the leaderboard but has no score")
    return report
