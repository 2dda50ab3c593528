"""The geo key schema: one function per key, hash tags, and ids that cannot break it."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from services.geo import keys


def test_the_documented_examples():
    assert keys.checkpoints("h7") == "geo:cp:{h7}"
    assert keys.checkpoint_info("h7") == "geo:cp:{h7}:info"
    assert keys.live("h7", 29481022) == "geo:live:{h7}:29481022"
    assert keys.live_seen("h7", 29481022) == "geo:live:{h7}:29481022:seen"
    assert keys.location("p42") == "geo:loc:{p42}"
    assert keys.tag("t-19") == "geo:tag:{t-19}"
    assert keys.hunt("h7") == "geo:hunt:{h7}"


def test_keys_a_script_touches_together_share_a_slot():
    hunt = "hunt-01.a_b"
    slot = key_slot(keys.checkpoints(hunt).encode())
    together = [keys.checkpoint_info(hunt)]
    for bucket in (1, 2, 3, 4):
        together += [keys.live(hunt, bucket), keys.live_seen(hunt, bucket)]
    assert {key_slot(k.encode()) for k in together} == {slot}
    # Per-player and per-tag keys spread by their own id, not by hunt.
    assert key_slot(keys.location("p1").encode()) == key_slot(b"p1")
    assert key_slot(keys.tag("t1").encode()) == key_slot(b"t1")


@pytest.mark.parametrize("bad", ["", "a}b", "a{b", "a:b", "-x", "a b", "x" * 65, "h7}:{p"])
def test_ids_that_would_break_a_key_are_refused(bad):
    for build in (keys.tag, keys.hunt, keys.checkpoints, keys.checkpoint_info, keys.location):
        with pytest.raises(ValueError):
            build(bad)
    with pytest.raises(ValueError):
        keys.live(bad, 1)
    with pytest.raises(ValueError):
        keys.live_seen(bad, 1)
