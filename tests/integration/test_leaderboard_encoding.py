"""The board's score encoding has one definition: keys.py's constants, which
the Lua scripts get templated in. This runs the real scripts (submit,
write_page, top's cursor) on a real Redis, or a Redis Cluster with
TEST_REDIS=cluster, against `keys.encode_score` at the edges: ties, totals
around MAX_TOTAL (2,097,151) and beyond, and times at and past both edges of
the board's window."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest

from libs import rediskit
from services.leaderboard import keys
from services.leaderboard.cache import BoardStore
from services.leaderboard.model import Cursor, Update

BUILD_MS = int(datetime(2026, 6, 1, tzinfo=UTC).timestamp() * 1000)
EPOCH = keys.epoch_for(BUILD_MS)
TOTALS = (0, 1, 999_999, keys.MAX_TOTAL - 1, keys.MAX_TOTAL, keys.MAX_TOTAL + 1, 1_000_000_000)
TIMES = (
    EPOCH - 10 * keys.TIME_SPAN,  # long before the window: sorts as its start
    EPOCH - 1,
    EPOCH,
    EPOCH + 1,
    BUILD_MS,
    EPOCH + keys.MAX_OFFSET_MS - 1,
    EPOCH + keys.MAX_OFFSET_MS,
    EPOCH + keys.TIME_SPAN,  # past the window: sorts as its end
    EPOCH + 10 * keys.TIME_SPAN,
)


def edge_updates() -> list[Update]:
    """Every total at every time, plus exact ties that only player_id orders."""
    updates = [
        Update(f"p{t}-{m}", total, ms, 1)
        for (t, total), (m, ms) in itertools.product(enumerate(TOTALS), enumerate(TIMES))
    ]
    for player in ("tie-b", "tie-B", "tie-a", "tie-a0"):
        updates.append(Update(player, keys.MAX_TOTAL, BUILD_MS, 1))
    return updates


def rule(update: Update) -> tuple[int, bytes]:
    """The order keys.py documents: its score, then member bytes."""
    return keys.encode_score(update.total, update.reached_ms, EPOCH), update.player_id.encode()


@pytest.fixture
async def redis(redis_urls):
    client = rediskit.connect(redis_urls["leaderboard"])
    yield client
    await client.aclose()


async def build(store: BoardStore, hunt: str, pages: list[list[Update]]) -> None:
    """A board built with EPOCH as its epoch, from `pages` (the rebuild's writes)."""
    assert await store.begin_build(hunt, "b1", EPOCH, 30_000)
    for page in pages:
        await store.write_page(hunt, "b1", 30_000, page)
    await store.finish_build(hunt, "b1", BUILD_MS)


async def stored_scores(redis, hunt: str) -> dict[str, int]:
    members = await redis.zrange(keys.board(hunt), 0, -1, withscores=True)
    scores = {}
    for player, score in members:
        assert score == int(score)  # an exact double
        scores[player] = int(score)
    return scores


@pytest.mark.parametrize("written_by", ["submit", "write_page"])
async def test_the_lua_encoding_equals_keys_encode_score_at_the_edges(redis, written_by):
    store = BoardStore(redis)
    hunt = f"enc-{written_by}"
    updates = edge_updates()
    if written_by == "submit":
        await build(store, hunt, [])
        counts = await store.submit({hunt: updates})
        assert counts[hunt] is not None and counts[hunt].applied == len(updates)
    else:
        await build(store, hunt, [updates[:17], updates[17:]])
    assert int(await redis.hget(keys.meta(hunt), "epoch")) == EPOCH
    scores = await stored_scores(redis, hunt)
    assert scores == {u.player_id: keys.encode_score(u.total, u.reached_ms, EPOCH) for u in updates}
    # the window's ends are the ends of the exact doubles
    assert min(scores.values()) == -(2**53) and max(scores.values()) == 2**53 - 1
    # Redis's order is the documented rule, and answers are exact (not clamped)
    page = await store.top(hunt, 1000, None)
    assert page is not None and page.player_count == len(updates)
    ordered = sorted(updates, key=rule)
    assert [(e.player_id, e.total, e.reached_ms) for e in page.entries] == [
        (u.player_id, u.total, u.reached_ms) for u in ordered
    ]
    assert [e.player_id for e in page.entries if e.player_id.startswith("tie-")] == [
        "tie-B",
        "tie-a",
        "tie-a0",
        "tie-b",
    ]


async def test_cursors_encode_like_keys_encode_score(redis):
    """top.lua encodes a page token's (total, time) to find where the next
    page starts: paging one entry at a time walks the whole board, and a
    cursor whose player has moved since starts after exactly the entries the
    rule puts at or before it."""
    store = BoardStore(redis)
    hunt = "enc-cursor"
    updates = edge_updates()
    await build(store, hunt, [updates])
    ordered = sorted(updates, key=rule)
    walked, cursor = [], None
    while True:
        page = await store.top(hunt, 1, cursor)
        assert page is not None
        walked += [e.player_id for e in page.entries]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert walked == [u.player_id for u in ordered]
    # cursors at positions nobody holds (their player moved): edge totals and times
    for total, ms, player in itertools.product(TOTALS, TIMES, ("p0-0", "tie-a", "zz-nobody", "A")):
        page = await store.top(hunt, 1, Cursor(total, ms, player))
        assert page is not None
        mark = (keys.encode_score(total, ms, EPOCH), player.encode())
        # a cursor equal to a member's position is that member: the next one follows
        before = sum(1 for u in ordered if rule(u) <= mark)
        want = [ordered[before].player_id] if before < len(ordered) else []
        assert [e.player_id for e in page.entries] == want, (total, ms, player)
