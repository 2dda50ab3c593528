"""Score service pieces without I/O: keys, hot-tier encoding, outbox collapse
and links, backoff, settings, and an unlock whose caller hangs up."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from opentelemetry import trace
from redis.crc import key_slot

from libs.backoff import Backoff
from libs.config import ConfigError
from services.score import keys
from services.score.cache import decode_checkpoint, encode_checkpoint
from services.score.config import ScoreConfig
from services.score.model import OutboxRow, Score, UnlockedCheckpoint, UnlockKind, UnlockOutcome
from services.score.outbox import collapse, links_of
from services.score.service import Scores

AT = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)


def test_keys_follow_the_design_examples():
    assert keys.player_score("h7", "p42") == "score:{h7:p42}"
    assert keys.player_checkpoints("h7", "p42") == "score:{h7:p42}:cps"


def test_both_keys_of_a_player_share_one_slot_and_players_spread():
    for hunt, player in [("h7", "p42"), ("hunt-1", "player.9"), ("A", "z_z")]:
        assert key_slot(keys.player_score(hunt, player).encode()) == key_slot(
            keys.player_checkpoints(hunt, player).encode()
        )
    slots = {key_slot(keys.player_score("h1", f"p{i}").encode()) for i in range(100)}
    assert len(slots) > 50  # one hunt does not sit on one shard


@pytest.mark.parametrize("bad", ["", "a b", "-x", "x}y", "x{y", "x:y", "a" * 65, "é"])
def test_keys_refuse_ids_that_could_break_the_schema(bad):
    with pytest.raises(ValueError):
        keys.player_score(bad, "p1")
    with pytest.raises(ValueError):
        keys.player_checkpoints("h1", bad)


def test_checkpoint_encoding_round_trips():
    cp = UnlockedCheckpoint(
        checkpoint_id="cp-1",
        points_awarded=150,
        first_finder=True,
        unlocked_at=datetime(2026, 5, 1, 12, 30, 1, 123456, tzinfo=UTC),
        scan_id="scan.9_x",
    )
    assert decode_checkpoint("cp-1", encode_checkpoint(cp)) == cp


def _row(id_: int, player: str, version: int, traceparent: str = "") -> OutboxRow:
    return OutboxRow(
        id=id_,
        hunt_id="h1",
        player_id=player,
        total_points=version * 10,
        reached_at=datetime(2026, 1, 1, tzinfo=UTC),
        version=version,
        traceparent=traceparent,
        tracestate="",
    )


def test_collapse_keeps_the_newest_version_per_player():
    rows = [_row(1, "a", 1), _row(2, "b", 1), _row(3, "a", 3), _row(4, "a", 2)]
    assert [(r.player_id, r.version) for r in collapse(rows)] == [("a", 3), ("b", 1)]


def test_links_are_distinct_and_valid():
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    rows = [_row(1, "a", 1, tp), _row(2, "b", 1, tp), _row(3, "c", 1, "garbage"), _row(4, "d", 1)]
    links = links_of(rows)
    assert len(links) == 1
    assert links[0].context.trace_id == 0x0AF7651916CD43DD8448EB211C80319C
    assert isinstance(links[0], trace.Link)


def test_backoff_doubles_up_to_the_cap_and_resets():
    backoff = Backoff(0.05, 0.3)
    assert [backoff.next() for _ in range(5)] == [0.05, 0.1, 0.2, 0.3, 0.3]
    backoff.reset()
    assert backoff.next() == 0.05


def test_settings_defaults_and_checks():
    base = {
        "SCORE_PG_DSN": "postgresql://x/y",
        "SCORE_REDIS_URL": "redis://x",
        "LEADERBOARD_SERVICE_ADDR": "127.0.0.1:1",
        "GEO_SERVICE_ADDR": "127.0.0.1:2",
        "AUTH_PEER_TOKEN": "t",
    }
    config = ScoreConfig.from_env(base)
    assert config.hot_tier_timeout_s == pytest.approx(0.005)
    assert config.hot_tier_ttl_s == 30 and config.relay_batch == 500
    assert config.relay_flush_s == pytest.approx(0.1)
    with pytest.raises(ConfigError) as err:
        ScoreConfig.from_env(
            {**base, "SCORE_RELAY_BATCH": "5000", "SCORE_HOT_TIER_TIMEOUT_MS": "soon"}
        )
    assert "SCORE_RELAY_BATCH must be <= 1000" in str(err.value)
    assert "SCORE_HOT_TIER_TIMEOUT_MS must be a number" in str(err.value)


def test_an_unlock_whose_caller_hangs_up_still_writes_through():
    """Cancelled between the commit and the write-through (the caller's
    deadline passed), an unlock still writes the hot tier: otherwise Redis
    would keep an older total that this process goes on trusting."""

    class HeldStore:
        def __init__(self) -> None:
            self.release = asyncio.Event()

        async def unlock(self, **request):
            await self.release.wait()  # the commit, taking its time
            return UnlockOutcome(
                kind=UnlockKind.UNLOCKED,
                points_awarded=10,
                first_finder=False,
                score=Score(total_points=10, checkpoints_found=1, reached_at=AT, version=1),
                unlock_scan_id="s1",
            )

    class Hot:
        def __init__(self) -> None:
            self.written: list[Score] = []

        async def record_unlock(self, hunt_id, player_id, score, checkpoint) -> None:
            self.written.append(score)

    async def test():
        store, hot = HeldStore(), Hot()
        scores = Scores(store, hot, hunts=None)  # type: ignore[arg-type]
        call = asyncio.ensure_future(
            scores.unlock(
                scan_id="s1",
                hunt_id="h1",
                player_id="p1",
                checkpoint_id="cp1",
                points=10,
                first_finder_bonus=0,
                at=AT,
            )  # fmt: skip
        )
        await asyncio.sleep(0.01)
        call.cancel()
        store.release.set()
        with pytest.raises(asyncio.CancelledError):
            await call
        await asyncio.sleep(0.01)
        assert [s.version for s in hot.written] == [1]

    asyncio.run(test())
