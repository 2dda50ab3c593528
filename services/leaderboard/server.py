"""The gRPC face of the leaderboard service: validate, call, map.

The only place that converts between protos and the domain (`model`'s
dataclasses); errors are `libs.errors` kinds that `libs.rpc` turns into
status codes with details (UNAVAILABLE + RetryInfo while a board is rebuilt).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncIterator

import grpc
from google.protobuf.duration_pb2 import Duration

from libs import paging, validate
from libs.auth import ADMIN, INTERNAL, PUBLIC
from libs.deadlines import Budget
from libs.errors import InvalidArgument
from libs.server import Binding
from libs.timestamps import timestamp_ms
from services.leaderboard.model import Cursor, Entry, TopSnapshot, Update
from services.leaderboard.service import Leaderboard
from services.leaderboard.watch import WatchHub
from treasure.leaderboard.v1 import leaderboard_pb2, leaderboard_pb2_grpc

#: The roles each RPC accepts (libs.auth); every RPC must be listed.
ROLES = {
    "SubmitScores": INTERNAL,
    "GetTop": PUBLIC,
    "GetRank": PUBLIC,
    "GetAround": PUBLIC,
    "WatchTop": PUBLIC,
    "RebuildBoard": ADMIN,
}

MAX_UPDATES = 1000
MAX_TOTAL_POINTS = 1_000_000_000
MAX_TOP = 1000
MAX_AROUND = 100
MAX_WATCH = 100
#: The most a read waits for a missing board to be built (less if its deadline is nearer).
BUILD_WAIT_S = 2.0


def _entry(entry: Entry) -> leaderboard_pb2.LeaderboardEntry:
    return leaderboard_pb2.LeaderboardEntry(
        rank=entry.rank,
        player_id=entry.player_id,
        total_points=entry.total,
        reached_at=timestamp_ms(entry.reached_ms),
    )


def _cursor(token: str) -> Cursor | None:
    raw = paging.decode(token, keys=("t", "r", "p"))
    if raw is None:
        return None
    total, reached, player = raw["t"], raw["r"], raw["p"]
    if (
        not isinstance(total, int)
        or not isinstance(reached, int)
        or not isinstance(player, str)
        or total < 0
        or not validate.is_id(player)
    ):
        raise InvalidArgument("page_token", "is not a valid page token")
    return Cursor(total, reached, player)


def _token(cursor: Cursor | None) -> str:
    if cursor is None:
        return ""
    return paging.encode({"t": cursor.total, "r": cursor.reached_ms, "p": cursor.player_id})


def _updates(request: leaderboard_pb2.SubmitScoresRequest) -> dict[str, list[Update]]:
    if not 1 <= len(request.updates) <= MAX_UPDATES:
        raise InvalidArgument("updates", f"must hold 1 to {MAX_UPDATES} updates")
    by_hunt: dict[str, list[Update]] = {}
    for i, update in enumerate(request.updates):
        field = f"updates[{i}]"
        hunt_id = validate.require_id(f"{field}.hunt_id", update.hunt_id)
        player_id = validate.require_id(f"{field}.player_id", update.player_id)
        total = validate.require_int(
            f"{field}.total_points", update.total_points, low=0, high=MAX_TOTAL_POINTS
        )
        version = validate.require_int(f"{field}.version", update.version, low=1)
        reached = update.reached_at
        validate.require_time(f"{field}.reached_at", reached, update.HasField("reached_at"))
        reached_ms = reached.seconds * 1000 + reached.nanos // 1_000_000
        hunt = by_hunt.get(hunt_id)
        if hunt is None:
            hunt = by_hunt[hunt_id] = []
        hunt.append(Update(player_id, total, reached_ms, version))
    return by_hunt


class LeaderboardServicer(leaderboard_pb2_grpc.LeaderboardServiceServicer):
    def __init__(self, board: Leaderboard, hub: WatchHub) -> None:
        self._board = board
        self._hub = hub
        self._responses = _WatchResponses()

    async def SubmitScores(
        self, request: leaderboard_pb2.SubmitScoresRequest, context: grpc.aio.ServicerContext
    ) -> leaderboard_pb2.SubmitScoresResponse:
        updates = _updates(request)
        counts = await self._board.submit(updates, wait_s=Budget.of(context).timeout(1.0, 0.2))
        self._hub.changed(updates)
        return leaderboard_pb2.SubmitScoresResponse(applied=counts.applied, stale=counts.stale)

    async def GetTop(
        self, request: leaderboard_pb2.GetTopRequest, context: grpc.aio.ServicerContext
    ) -> leaderboard_pb2.GetTopResponse:
        hunt_id = validate.require_id("hunt_id", request.hunt_id)
        limit = validate.page_size("limit", request.limit, default=10, maximum=MAX_TOP)
        page = await self._board.top(
            hunt_id, limit, _cursor(request.page_token), wait_s=_build_wait(context)
        )
        return leaderboard_pb2.GetTopResponse(
            entries=[_entry(e) for e in page.entries],
            next_page_token=_token(page.next_cursor),
            player_count=page.player_count,
        )

    async def GetRank(
        self, request: leaderboard_pb2.GetRankRequest, context: grpc.aio.ServicerContext
    ) -> leaderboard_pb2.GetRankResponse:
        hunt_id = validate.require_id("hunt_id", request.hunt_id)
        player_id = validate.require_id("player_id", request.player_id)
        entry, count = await self._board.rank(hunt_id, player_id, wait_s=_build_wait(context))
        return leaderboard_pb2.GetRankResponse(
            rank=entry.rank,
            total_points=entry.total,
            player_count=count,
            reached_at=timestamp_ms(entry.reached_ms),
        )

    async def GetAround(
        self, request: leaderboard_pb2.GetAroundRequest, context: grpc.aio.ServicerContext
    ) -> leaderboard_pb2.GetAroundResponse:
        hunt_id = validate.require_id("hunt_id", request.hunt_id)
        player_id = validate.require_id("player_id", request.player_id)
        n = validate.page_size("n", request.n, default=5, maximum=MAX_AROUND)
        around = await self._board.around(hunt_id, player_id, n, wait_s=_build_wait(context))
        return leaderboard_pb2.GetAroundResponse(
            entries=[_entry(e) for e in around.entries], player_count=around.player_count
        )

    async def WatchTop(
        self, request: leaderboard_pb2.WatchTopRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[leaderboard_pb2.WatchTopResponse]:
        hunt_id = validate.require_id("hunt_id", request.hunt_id)
        limit = validate.page_size("limit", request.limit, default=10, maximum=MAX_WATCH)
        await self._board.ensure(hunt_id, wait_s=_build_wait(context))
        subscription = self._hub.subscribe(hunt_id, limit)
        context.add_done_callback(lambda _context: subscription.close())
        try:
            while True:
                snapshot = await subscription.next()
                if snapshot.missing:
                    raise self._board.missing_error(hunt_id)
                yield self._responses.of(snapshot)
        finally:
            subscription.close()

    async def RebuildBoard(
        self, request: leaderboard_pb2.RebuildBoardRequest, context: grpc.aio.ServicerContext
    ) -> leaderboard_pb2.RebuildBoardResponse:
        hunt_id = validate.require_id("hunt_id", request.hunt_id)
        result = await self._board.rebuild(hunt_id)
        took = Duration()
        took.FromNanoseconds(int(result.took_s * 1e9))
        return leaderboard_pb2.RebuildBoardResponse(player_count=result.player_count, took=took)


def _build_wait(context: grpc.aio.ServicerContext) -> float:
    return Budget.of(context).timeout(BUILD_WAIT_S, margin_s=0.05)


class _WatchResponses:
    """The WatchTop answer to each recent snapshot, built once for all the
    watchers that share it (a board pushed to thousands of streams would
    otherwise be built thousands of times: 37 us each, measured). Keyed by
    the snapshot object, which the memo holds so its id is not reused."""

    def __init__(self, size: int = 256) -> None:
        self._size = size
        self._items: OrderedDict[int, tuple[TopSnapshot, leaderboard_pb2.WatchTopResponse]] = (
            OrderedDict()
        )

    def of(self, snapshot: TopSnapshot) -> leaderboard_pb2.WatchTopResponse:
        item = self._items.get(id(snapshot))
        if item is not None and item[0] is snapshot:
            return item[1]
        response = _watch_response(snapshot)
        self._items[id(snapshot)] = (snapshot, response)
        if len(self._items) > self._size:
            self._items.popitem(last=False)
        return response


def _watch_response(snapshot: TopSnapshot) -> leaderboard_pb2.WatchTopResponse:
    return leaderboard_pb2.WatchTopResponse(
        entries=[_entry(e) for e in snapshot.entries],
        player_count=snapshot.player_count,
        as_of=timestamp_ms(snapshot.as_of_ms),
    )


def binding(servicer: LeaderboardServicer) -> Binding:
    return Binding(
        descriptor=leaderboard_pb2.DESCRIPTOR.services_by_name["LeaderboardService"],
        add_to_server=leaderboard_pb2_grpc.add_LeaderboardServiceServicer_to_server,
        servicer=servicer,
        roles=ROLES,
    )
