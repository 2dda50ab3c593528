"""The leaderboard's key schema and its sorted-set score encoding (no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from libs.config import ConfigError
from services.leaderboard import keys
from services.leaderboard.config import LeaderboardConfig

BUILD_MS = int(datetime(2025, 6, 1, tzinfo=UTC).timestamp() * 1000)
EPOCH = keys.epoch_for(BUILD_MS)
DAY_MS = 86_400_000
KEY_FUNCTIONS = (
    keys.board,
    keys.players,
    keys.meta,
    keys.build_lock,
    keys.tmp_board,
    keys.tmp_players,
)


def test_keys_follow_the_design_and_share_the_hunt_slot():
    assert keys.board("h7") == "lb:{h7}"  # the key the docs show
    names = [f("h7") for f in KEY_FUNCTIONS]
    assert len(set(names)) == len(names)
    assert all(name.startswith("lb:{h7}") for name in names)
    # every key of a hunt is in one slot, so scripts and RENAME work on a cluster
    assert {key_slot(name.encode()) for name in names} == {key_slot(b"h7")}
    # and hunts spread over slots
    assert len({key_slot(keys.board(f"h{i}").encode()) for i in range(100)}) > 50


def test_ids_with_dots_dashes_and_underscores_keep_the_tag():
    hunt = "Lisbon_2025.fest-A"
    for make in KEY_FUNCTIONS:
        assert make(hunt).count("{") == 1 and f"{{{hunt}}}" in make(hunt)


def score_order(total: int, reached_ms: int, player: str) -> tuple[int, str]:
    """How Redis orders a member: by score, then member bytes."""
    return keys.encode_score(total, reached_ms, EPOCH), player


def test_higher_total_first_then_earlier_then_player_id():
    rows = [
        (500, BUILD_MS + 5, "b"),
        (500, BUILD_MS + 4, "z"),
        (500, BUILD_MS + 5, "a"),
        (501, BUILD_MS + 999_999, "y"),
        (0, BUILD_MS, "c"),
        (500, BUILD_MS + 4, "A"),
    ]
    ordered = sorted(rows, key=lambda r: score_order(*r))
    assert [r[2] for r in ordered] == ["y", "A", "z", "a", "b", "c"]


def test_encoding_is_exact_at_its_limits():
    lowest = keys.encode_score(keys.MAX_TOTAL, EPOCH, EPOCH)
    highest = keys.encode_score(0, EPOCH + keys.MAX_OFFSET_MS, EPOCH)
    assert lowest == -(2**53) and highest == 2**53 - 1
    for score in (lowest, highest, lowest + 1, highest - 1):
        assert int(float(score)) == score  # an exact double
    # neighbours at the limits stay distinct and ordered as doubles
    assert float(highest - 1) < float(highest)
    assert float(lowest) < float(lowest + 1)
    assert keys.decode_score(lowest, EPOCH) == (keys.MAX_TOTAL, EPOCH)
    assert keys.decode_score(highest, EPOCH) == (0, EPOCH + keys.MAX_OFFSET_MS)


def test_the_required_range_is_covered():
    # totals up to at least 1,000,000 and ms times across a 30-day hunt on
    # either side of the build (the window is centred on it)
    assert keys.MAX_TOTAL >= 1_000_000
    assert keys.MAX_OFFSET_MS // 2 >= 30 * DAY_MS
    start, end = BUILD_MS - 30 * DAY_MS, BUILD_MS + 30 * DAY_MS
    a = keys.encode_score(1_000_000, end, EPOCH)
    b = keys.encode_score(1_000_000, end - 1, EPOCH)
    c = keys.encode_score(999_999, start, EPOCH)
    assert float(b) < float(a) < float(c)
    assert keys.decode_score(a, EPOCH) == (1_000_000, end)
    assert keys.decode_score(c, EPOCH) == (999_999, start)


def test_out_of_range_values_clamp_to_the_edges():
    over = keys.encode_score(5_000_000, BUILD_MS, EPOCH)
    assert over == keys.encode_score(keys.MAX_TOTAL, BUILD_MS, EPOCH)
    assert over < keys.encode_score(keys.MAX_TOTAL - 1, EPOCH, EPOCH)
    before = keys.encode_score(10, EPOCH - 1, EPOCH)
    assert before == keys.encode_score(10, EPOCH, EPOCH)
    after = keys.encode_score(10, EPOCH + keys.TIME_SPAN + 5, EPOCH)
    assert after == keys.encode_score(10, EPOCH + keys.MAX_OFFSET_MS, EPOCH)
    assert after < keys.encode_score(9, EPOCH, EPOCH)  # a total still beats any time


window = st.integers(min_value=EPOCH, max_value=EPOCH + keys.MAX_OFFSET_MS)
totals = st.integers(min_value=0, max_value=keys.MAX_TOTAL)


@given(totals, window, totals, window)
def test_double_order_equals_the_rule(t1, ms1, t2, ms2):
    s1, s2 = keys.encode_score(t1, ms1, EPOCH), keys.encode_score(t2, ms2, EPOCH)
    assert float(s1) == s1 and float(s2) == s2
    rule = (-t1, ms1) < (-t2, ms2)
    assert (float(s1) < float(s2)) == rule
    assert (s1 == s2) == ((t1, ms1) == (t2, ms2))
    assert keys.decode_score(s1, EPOCH) == (t1, ms1)


def test_epoch_centres_the_window_on_the_build():
    assert BUILD_MS - EPOCH == keys.EPOCH_LEAD_MS == keys.TIME_SPAN // 2


def test_config_defaults_and_limits():
    base = {
        "LEADERBOARD_REDIS_URL": "redis://x",
        "SCORE_SERVICE_ADDR": "127.0.0.1:1",
        "GEO_SERVICE_ADDR": "127.0.0.1:2",
        "AUTH_PEER_TOKEN": "t",
    }
    config = LeaderboardConfig.from_env(base)
    assert config.watch_rate == 4.0 and config.top_cache_ms <= 250
    assert config.reconcile_s == 600.0 and config.common.grpc_listen == "127.0.0.1:50053"
    with pytest.raises(ConfigError) as err:
        LeaderboardConfig.from_env(
            {**base, "LEADERBOARD_TOP_CACHE_MS": "1000", "LEADERBOARD_WATCH_RATE": "fast"}
        )
    assert "LEADERBOARD_TOP_CACHE_MS must be <= 250" in str(err.value)
    assert "LEADERBOARD_WATCH_RATE must be a number" in str(err.value)


@pytest.mark.parametrize("bad", ["", "a b", "x}y", "x{y", "x:y", "a" * 65])
def test_keys_refuse_ids_that_could_break_the_schema(bad):
    for build in (keys.board, keys.players, keys.meta, keys.build_lock, keys.tmp_board):
        with pytest.raises(ValueError):
            build(bad)
