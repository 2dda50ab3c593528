"""huntctl: the operator's command line for a Treasure Hunt Engine.

    huntctl import FILE          a hunt, its checkpoints and tiles from YAML/JSON (idempotent)
    huntctl hunts                list hunts
    huntctl board HUNT [--watch] the leaderboard (live with --watch, from WatchTop)
    huntctl scans PLAYER         a player's scans, newest first
    huntctl refresh-tiles HUNT   refresh the tile view now
    huntctl rebuild-board HUNT   rebuild a leaderboard from the scores
    huntctl verify HUNT          check the invariants (nothing lost, nothing twice, board = scores)

It talks gRPC with the token in --token or HUNTCTL_TOKEN (an admin token for
writes). Output is a table, or JSON with --json. Errors print the gRPC status
and exit non-zero (2 for usage and input errors, 1 for failed calls).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import signal
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import yaml
from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from libs.auth import bearer_metadata
from libs.channels import BALANCING
from libs.config import peer_target
from treasure.common.v1 import common_pb2
from treasure.geo.v1 import geo_pb2, geo_pb2_grpc
from treasure.leaderboard.v1 import leaderboard_pb2, leaderboard_pb2_grpc
from treasure.scan.v1 import scan_pb2, scan_pb2_grpc

DEFAULT_ADDRS = {
    "scan": "127.0.0.1:50051",
    "leaderboard": "127.0.0.1:50053",
    "geo": "127.0.0.1:50054",
}
TIMEOUT_S = 10.0
#: Written by `make up`: the local stack's settings, its replicas' addresses included.
STACK_ENV = Path(__file__).resolve().parents[1] / ".run" / "stack.env"


def default_addr(service: str) -> str:
    """$<SERVICE>_SERVICE_ADDR, else what `make up` wrote (every replica it
    started), else the local stack's first port."""
    name = f"{service.upper()}_SERVICE_ADDR"
    if os.environ.get(name):
        return os.environ[name]
    if STACK_ENV.exists():
        for line in STACK_ENV.read_text().splitlines():
            key, _, value = line.partition("=")
            if key == name and value:
                return value
    return DEFAULT_ADDRS[service]


def client_channel(addresses: str) -> grpc.aio.Channel:
    """A channel to a service: one address, a list of its replicas or a
    `dns:///` name (libs.config.peer_target), balanced over those SERVING."""
    try:
        target = peer_target(addresses)
    except ValueError as exc:
        raise SystemExit(f"huntctl: {exc}") from None
    return grpc.aio.insecure_channel(
        target, options=[("grpc.service_config", json.dumps(BALANCING))]
    )


_STATUS = {"draft": geo_pb2.HUNT_STATUS_DRAFT, "published": geo_pb2.HUNT_STATUS_PUBLISHED,
           "cancelled": geo_pb2.HUNT_STATUS_CANCELLED}  # fmt: skip


class UsageError(Exception):
    """Bad input from the operator (exit 2)."""


def _ts(value: Any, field: str) -> Timestamp:
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
    else:
        try:
            moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            raise UsageError(f"{field}: not an ISO-8601 time: {value!r}") from None
    out = Timestamp()
    out.FromDatetime(moment)
    return out


def _require(mapping: dict, key: str, where: str) -> Any:
    if key not in mapping:
        raise UsageError(f"{where}: missing '{key}'")
    return mapping[key]


def load_hunt_file(
    path: Path,
) -> tuple[geo_pb2.Hunt, list[geo_pb2.Checkpoint], list[geo_pb2.PutTileRequest]]:
    """Parses a hunt file into the messages that create it."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror}") from None
    try:
        doc = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise UsageError(
            f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}"
        ) from None
    if not isinstance(doc, dict):
        raise UsageError(f"{path}: expected a mapping with 'hunt', 'checkpoints' and 'tiles'")
    h = _require(doc, "hunt", str(path))
    grid = _require(h, "grid", "hunt")
    origin = _require(grid, "origin", "hunt.grid")
    status = str(h.get("status", "published")).lower()
    if status not in _STATUS:
        raise UsageError(f"hunt.status: one of {', '.join(_STATUS)}")
    hunt = geo_pb2.Hunt(
        hunt_id=str(_require(h, "id", "hunt")),
        name=str(_require(h, "name", "hunt")),
        starts_at=_ts(_require(h, "starts_at", "hunt"), "hunt.starts_at"),
        ends_at=_ts(_require(h, "ends_at", "hunt"), "hunt.ends_at"),
        status=_STATUS[status],
        grid=geo_pb2.TileGrid(
            origin=common_pb2.GeoPoint(lat=float(origin["lat"]), lon=float(origin["lon"])),
            tile_size_m=float(_require(grid, "tile_size_m", "hunt.grid")),
            columns=int(_require(grid, "columns", "hunt.grid")),
            rows=int(_require(grid, "rows", "hunt.grid")),
        ),
    )
    checkpoints = []
    for i, c in enumerate(doc.get("checkpoints") or []):
        where = f"checkpoints[{i}]"
        checkpoints.append(
            geo_pb2.Checkpoint(
                checkpoint_id=str(_require(c, "id", where)),
                hunt_id=hunt.hunt_id,
                tag_id=str(_require(c, "tag", where)),
                name=str(_require(c, "name", where)),
                location=common_pb2.GeoPoint(
                    lat=float(_require(c, "lat", where)), lon=float(_require(c, "lon", where))
                ),
                radius_m=float(c.get("radius_m", 25)),
                points=int(c.get("points", 10)),
                first_finder_bonus=int(c.get("first_finder_bonus", 0)),
            )
        )
    tiles = []
    for i, t in enumerate(doc.get("tiles") or []):
        where = f"tiles[{i}]"
        if "data_base64" in t:
            data = base64.b64decode(t["data_base64"])
        else:
            data = str(_require(t, "data", where)).encode()
        tiles.append(
            geo_pb2.PutTileRequest(
                hunt_id=hunt.hunt_id,
                x=int(_require(t, "x", where)),
                y=int(_require(t, "y", where)),
                data=data,
                version=int(t.get("version", 1)),
                content_type=str(t.get("content_type", "")),
            )
        )
    return hunt, checkpoints, tiles


class Ctl:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.metadata = bearer_metadata(args.token)
        self._channels: dict[str, grpc.aio.Channel] = {}

    def channel(self, service: str) -> grpc.aio.Channel:
        if service not in self._channels:
            self._channels[service] = client_channel(getattr(self.args, f"{service}_addr"))
        return self._channels[service]

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()

    def out(self, rows: Sequence[dict], columns: Sequence[str], payload: Any = None) -> None:
        if self.args.json:
            print(json.dumps(payload if payload is not None else list(rows), indent=2, default=str))
            return
        if not rows:
            print("(none)")
            return
        widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
        print("  ".join(c.upper().ljust(widths[c]) for c in columns))
        for row in rows:
            print("  ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns))

    # -- commands ----------------------------------------------------------------

    async def import_(self) -> int:
        hunt, checkpoints, tiles = load_hunt_file(Path(self.args.file))
        geo = geo_pb2_grpc.GeoServiceStub(self.channel("geo"))
        try:
            await geo.CreateHunt(
                geo_pb2.CreateHuntRequest(hunt=hunt), metadata=self.metadata, timeout=TIMEOUT_S
            )
            hunt_action = "created"
        except grpc.aio.AioRpcError as err:
            if err.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise
            await geo.UpdateHunt(
                geo_pb2.UpdateHuntRequest(hunt=hunt), metadata=self.metadata, timeout=TIMEOUT_S
            )
            hunt_action = "updated"
        created = 0
        for checkpoint in checkpoints:
            reply = await geo.UpsertCheckpoint(
                geo_pb2.UpsertCheckpointRequest(checkpoint=checkpoint),
                metadata=self.metadata,
                timeout=TIMEOUT_S,
            )
            created += reply.created
        for tile in tiles:
            await geo.PutTile(tile, metadata=self.metadata, timeout=TIMEOUT_S)
        if tiles:
            await geo.RefreshTiles(
                geo_pb2.RefreshTilesRequest(hunt_id=hunt.hunt_id),
                metadata=self.metadata,
                timeout=60,
            )
        summary = {
            "hunt_id": hunt.hunt_id,
            "hunt": hunt_action,
            "checkpoints": len(checkpoints),
            "checkpoints_created": created,
            "tiles": len(tiles),
        }
        self.out([summary], list(summary), summary)
        return 0

    async def hunts(self) -> int:
        geo = geo_pb2_grpc.GeoServiceStub(self.channel("geo"))
        rows, token = [], ""
        while True:
            page = await geo.ListHunts(
                geo_pb2.ListHuntsRequest(page_size=100, page_token=token),
                metadata=self.metadata,
                timeout=TIMEOUT_S,
            )
            for h in page.hunts:
                rows.append({
                    "hunt_id": h.hunt_id,
                    "name": h.name,
                    "status": geo_pb2.HuntStatus.Name(h.status).removeprefix("HUNT_STATUS_").lower(),
                    "starts_at": h.starts_at.ToDatetime(tzinfo=UTC).isoformat(timespec="seconds"),
                    "ends_at": h.ends_at.ToDatetime(tzinfo=UTC).isoformat(timespec="seconds"),
                })  # fmt: skip
            token = page.next_page_token
            if not token:
                break
        self.out(rows, ["hunt_id", "name", "status", "starts_at", "ends_at"])
        return 0

    @staticmethod
    def _entries(entries) -> list[dict]:
        return [
            {"rank": e.rank, "player_id": e.player_id, "total_points": e.total_points}
            for e in entries
        ]

    async def board(self) -> int:
        stub = leaderboard_pb2_grpc.LeaderboardServiceStub(self.channel("leaderboard"))
        if not self.args.watch:
            reply = await stub.GetTop(
                leaderboard_pb2.GetTopRequest(hunt_id=self.args.hunt, limit=self.args.limit),
                metadata=self.metadata,
                timeout=TIMEOUT_S,
            )
            self.out(self._entries(reply.entries), ["rank", "player_id", "total_points"])
            return 0
        call = stub.WatchTop(
            leaderboard_pb2.WatchTopRequest(hunt_id=self.args.hunt, limit=self.args.limit),
            metadata=self.metadata,
        )
        async for update in call:
            if not self.args.json:
                print(f"\x1b[2J\x1b[H{self.args.hunt} — {update.player_count} players — "
                      f"{update.as_of.ToDatetime(tzinfo=UTC).isoformat(timespec='seconds')}")  # fmt: skip
            self.out(self._entries(update.entries), ["rank", "player_id", "total_points"])
        return 0

    async def scans(self) -> int:
        stub = scan_pb2_grpc.ScanServiceStub(self.channel("scan"))
        reply = await stub.ListPlayerScans(
            scan_pb2.ListPlayerScansRequest(player_id=self.args.player, hunt_id=self.args.hunt or "",
                                            page_size=self.args.limit),
            metadata=self.metadata,
            timeout=TIMEOUT_S,
        )  # fmt: skip
        rows = [
            {
                "scan_id": s.scan_id,
                "hunt_id": s.hunt_id,
                "tag_id": s.tag_id,
                "scanned_at": s.scanned_at.ToDatetime(tzinfo=UTC).isoformat(timespec="seconds"),
                "status": scan_pb2.ScanStatus.Name(s.status).removeprefix("SCAN_STATUS_").lower(),
                "outcome": scan_pb2.ScanOutcome.Name(s.outcome)
                .removeprefix("SCAN_OUTCOME_")
                .lower(),
                "points": s.points_awarded,
                "total": s.total_points,
            }
            for s in reply.scans
        ]
        self.out(rows, ["scan_id", "hunt_id", "tag_id", "scanned_at", "status", "outcome", "points", "total"],
                 [json_format.MessageToDict(s) for s in reply.scans])  # fmt: skip
        return 0

    async def refresh_tiles(self) -> int:
        stub = geo_pb2_grpc.GeoServiceStub(self.channel("geo"))
        reply = await stub.RefreshTiles(
            geo_pb2.RefreshTilesRequest(hunt_id=self.args.hunt), metadata=self.metadata, timeout=120
        )
        row = {"refreshed": reply.refreshed,
               "refreshed_at": reply.refreshed_at.ToDatetime(tzinfo=UTC).isoformat(timespec="seconds")}  # fmt: skip
        self.out([row], list(row), row)
        return 0

    async def rebuild_board(self) -> int:
        stub = leaderboard_pb2_grpc.LeaderboardServiceStub(self.channel("leaderboard"))
        reply = await stub.RebuildBoard(
            leaderboard_pb2.RebuildBoardRequest(hunt_id=self.args.hunt),
            metadata=self.metadata,
            timeout=600,
        )
        row = {"hunt_id": self.args.hunt, "players": reply.player_count,
               "took_s": round(reply.took.ToTimedelta().total_seconds(), 3)}  # fmt: skip
        self.out([row], list(row), row)
        return 0

    async def verify(self) -> int:
        from tools.verify import verify

        scan_dsn = self.args.scan_dsn or _stack_setting("SCAN_PG_DSN")
        score_dsn = self.args.score_dsn or _stack_setting("SCORE_PG_DSN")
        if not scan_dsn or not score_dsn:
            raise UsageError(
                "verify needs --scan-dsn and --score-dsn (or SCAN_PG_DSN/SCORE_PG_DSN, or `make up`)"
            )
        report = await verify(
            self.args.hunt, scan_dsn, score_dsn, self.channel("leaderboard"), self.metadata
        )
        if self.args.json:
            print(json.dumps({"hunt_id": report.hunt_id, "ok": report.ok, "counts": report.counts,
                              "problems": report.problems}, indent=2))  # fmt: skip
        else:
            print(f"{report.hunt_id}: " + ", ".join(f"{k} {v}" for k, v in report.counts.items()))
            for problem in report.problems:
                print(f"  DIFF {problem}")
            print(
                "OK: every invariant holds"
                if report.ok
                else f"FAILED: {len(report.problems)} differences"
            )
        return 0 if report.ok else 1


def _stack_setting(name: str) -> str:
    """A setting from the environment, else from the local stack's .run/stack.env."""
    if os.environ.get(name):
        return os.environ[name]
    path = Path(__file__).resolve().parents[1] / ".run" / "stack.env"
    if path.exists():
        for line in path.read_text().splitlines():
            key, _, value = line.partition("=")
            if key == name:
                return value
    return ""


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="huntctl", description=__doc__.split("\n\n")[0])
    top.add_argument("--token", default=os.environ.get("HUNTCTL_TOKEN", ""),
                     help="bearer token (default: $HUNTCTL_TOKEN)")  # fmt: skip
    for service, addr in DEFAULT_ADDRS.items():
        env = f"{service.upper()}_SERVICE_ADDR"
        top.add_argument(f"--{service}-addr", default=default_addr(service),
                         help=f"{service} service host:port, or its replicas' list "
                              f"(default: ${env}, else what `make up` started, else {addr})")  # fmt: skip
    top.add_argument("--json", action="store_true", help="print JSON instead of a table")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser(
        "import", help="import a hunt file (YAML or JSON); importing twice changes nothing"
    )
    p.add_argument("file", help="hunt file: hunt, checkpoints, tiles")
    p.set_defaults(run=Ctl.import_)
    p = commands.add_parser("hunts", help="list hunts")
    p.set_defaults(run=Ctl.hunts)
    p = commands.add_parser("board", help="a hunt's leaderboard")
    p.add_argument("hunt")
    p.add_argument("--limit", type=int, default=10, help="rows (default 10)")
    p.add_argument("--watch", action="store_true", help="follow live updates until Ctrl-C")
    p.set_defaults(run=Ctl.board)
    p = commands.add_parser("scans", help="a player's scans, newest first")
    p.add_argument("player")
    p.add_argument("--hunt", help="only this hunt")
    p.add_argument("--limit", type=int, default=20, help="rows (default 20, at most 100)")
    p.set_defaults(run=Ctl.scans)
    p = commands.add_parser("refresh-tiles", help="refresh the tile view now")
    p.add_argument("hunt")
    p.set_defaults(run=Ctl.refresh_tiles)
    p = commands.add_parser("rebuild-board", help="rebuild a hunt's leaderboard from the scores")
    p.add_argument("hunt")
    p.set_defaults(run=Ctl.rebuild_board)
    p = commands.add_parser(
        "verify", help="check the invariants of a hunt; non-zero exit on any difference"
    )
    p.add_argument("hunt")
    p.add_argument(
        "--scan-dsn", default="", help="Postgres of scan (default: $SCAN_PG_DSN or the local stack)"
    )
    p.add_argument(
        "--score-dsn",
        default="",
        help="Postgres of score (default: $SCORE_PG_DSN or the local stack)",
    )
    p.set_defaults(run=Ctl.verify)
    return top


async def _run(args: argparse.Namespace) -> int:
    ctl = Ctl(args)
    task = asyncio.ensure_future(args.run(ctl))
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, task.cancel)
    try:
        return await task
    except asyncio.CancelledError:
        return 130
    finally:
        await ctl.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not args.token:
        print("huntctl: no token: pass --token or set HUNTCTL_TOKEN", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_run(args))
    except UsageError as exc:
        print(f"huntctl: {exc}", file=sys.stderr)
        return 2
    except grpc.aio.AioRpcError as err:
        print(f"huntctl: {err.code().name}: {err.details()}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
