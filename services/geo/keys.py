"""Every Redis key of the geo service, built here and only here.

Hash tags (docs/ARCHITECTURE.md, "Redis"): `{hunt_id}` for the per-hunt sets (checkpoint
geo set and its info hash, the live-player buckets), `{player_id}` for a
player's last location, `{tag_id}` for the tag cache and `{hunt_id}` for the
hunt cache. Every script and multi-key command of `services.geo.cache` touches
keys of one tag only, so it runs unchanged on Redis Cluster.

Ids are checked with libs.validate.key_id here as well (the server checks
them first): no id can carry a `{`, `}` or `:` into a key.

| key | type | holds | lifetime |
| --- | --- | --- | --- |
| `geo:tag:{t-19}` | string | `<version>\\|<checkpoint json>` or `<version>\\|` (no such tag) | catalog / negative TTL |
| `geo:hunt:{h7}` | string | `<version>\\|<hunt json>` or `<version>\\|` (no such hunt) | catalog / negative TTL |
| `geo:cp:{h7}` | geo set | active checkpoints of the hunt (member: checkpoint id) | catalog TTL |
| `geo:cp:{h7}:info` | hash | `_v` set version, `_n` count, `_g` count in the geo set, `_polar` ids outside Redis GEO's latitude range, and checkpoint id -> json | catalog TTL |
| `geo:live:{h7}:29481022` | geo set | players seen in time bucket 29481022 of the hunt | until the bucket is out of the 60 s window |
| `geo:live:{h7}:29481022:seen` | sorted set | player -> when seen (ms) in that bucket | same as its geo set |
| `geo:loc:{p42}` | string | `<seen ms>\\|<hunt>\\|<lat>\\|<lon>\\|<accuracy>` | 30 s after the sighting |
"""

from __future__ import annotations

from libs.validate import key_id


def tag(tag_id: str) -> str:
    """The cached checkpoint of a tag (or a "no such tag" marker)."""
    return f"geo:tag:{{{key_id('tag id', tag_id)}}}"


def hunt(hunt_id: str) -> str:
    """The cached hunt (or a "no such hunt" marker)."""
    return f"geo:hunt:{{{key_id('hunt id', hunt_id)}}}"


def checkpoints(hunt_id: str) -> str:
    """The geo set of the active checkpoints of a hunt."""
    return f"geo:cp:{{{key_id('hunt id', hunt_id)}}}"


def checkpoint_info(hunt_id: str) -> str:
    """The info hash beside `checkpoints(hunt_id)` (same slot)."""
    return f"geo:cp:{{{key_id('hunt id', hunt_id)}}}:info"


def live(hunt_id: str, bucket: int) -> str:
    """The geo set of the players of a hunt seen in one time bucket."""
    return f"geo:live:{{{key_id('hunt id', hunt_id)}}}:{int(bucket)}"


def live_seen(hunt_id: str, bucket: int) -> str:
    """When each player of `live(hunt_id, bucket)` was seen (same slot)."""
    return f"geo:live:{{{key_id('hunt id', hunt_id)}}}:{int(bucket)}:seen"


def location(player_id: str) -> str:
    """The last location of a player."""
    return f"geo:loc:{{{key_id('player id', player_id)}}}"
