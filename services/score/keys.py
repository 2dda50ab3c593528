"""Every Redis key of the score service, each built by one documented function.

The hot tier is per (hunt, player), so both keys carry the hash tag
`{hunt_id:player_id}`: they live in one slot (the Lua scripts touch both at
once, also on Redis Cluster) and the writes of one hunt spread over every
shard. Ids are checked here (libs.validate.key_id) before they reach a
key, so no id can break the schema or its hash tags.
"""

from __future__ import annotations

from libs.validate import key_id


def _tag(hunt_id: str, player_id: str) -> str:
    return f"{{{key_id('hunt_id', hunt_id)}:{key_id('player_id', player_id)}}}"


def player_score(hunt_id: str, player_id: str) -> str:
    """`score:{h7:p42}` — hash of a player's total in a hunt (30 s TTL).

    Fields: `t` total, `f` checkpoints found, `v` version (the Postgres
    player_scores.version it mirrors; 0 for a player without unlocks) and `r`
    when the total was reached (microseconds since the epoch, "" when none).
    """
    return f"score:{_tag(hunt_id, player_id)}"


def player_checkpoints(hunt_id: str, player_id: str) -> str:
    """`score:{h7:p42}:cps` — hash of the checkpoints a player unlocked (30 s TTL).

    One field per checkpoint id, valued `points|first_finder(0/1)|at_us|scan_id`,
    and the field `_v`: the version up to which the set is complete (no id can
    start with `_`). It is served only when `_v` equals the score's `v`.
    """
    return f"score:{_tag(hunt_id, player_id)}:cps"
