"""Every Redis key of the leaderboard service, and the sorted-set score encoding.

Keys (all of one hunt share the hash tag `{hunt_id}`, so every script and
RENAME of a hunt touches one slot, on one Redis or on Redis Cluster). Ids are
validated (`libs.validate`) before they reach these functions, and checked
again here (`key_id`).

| function | key | type | holds |
| --- | --- | --- | --- |
| `board` | `lb:{h7}` | sorted set | member player_id, score `encode_score(...)` |
| `players` | `lb:{h7}:p` | hash | player_id -> `version|total|reached_ms` (exact values, version check) |
| `meta` | `lb:{h7}:meta` | hash | the build marker: `build` id, `epoch` (ms), `built_at` (ms), `seq` (change counter) |
| `build_lock` | `lb:{h7}:build` | string | `build_id|epoch` while a rebuild runs (PX, refreshed per page) |
| `tmp_board` | `lb:{h7}:tmp` | sorted set | the board being rebuilt (PX like the lock) |
| `tmp_players` | `lb:{h7}:tmp:p` | hash | its players (PX like the lock) |

A board exists only when its `meta` exists (the build marker, written in the
same script that RENAMEs a finished rebuild over the live keys). No marker
means missing: a read asks geo whether the hunt exists (NOT_FOUND if not),
rebuilds the board and waits for it within its deadline (UNAVAILABLE if it
cannot be built in time).

Score encoding
--------------
The board is read in ascending score order; on equal scores Redis orders
members byte-wise, i.e. by player_id ascending. The score packs

    score = (TOTAL_BIAS - min(total, MAX_TOTAL)) * 2**TIME_BITS + offset_ms

with `TOTAL_BIAS = 2**20 - 1`, `TIME_BITS = 33` and
`offset_ms = clamp(reached_ms - epoch_ms, 0, 2**33 - 1)`. The result lies in
[-2**53, 2**53 - 1], where every integer is an exact double, so the order is
exact: higher total first, then earlier reached_at (to the millisecond), then
player_id. Limits:

- totals 0..MAX_TOTAL (2,097,151) order exactly; a larger total (the API
  allows up to 1e9) sorts as MAX_TOTAL (ties among such players fall back to
  time, then player_id) but is stored and answered exactly;
- times order exactly inside the board's window [epoch, epoch + 2**33 ms),
  about 99.4 days. The epoch is chosen at each (re)build as build time minus
  2**32 ms (about 49.7 days), so the window is centred on the build: any
  hunt of up to 30 days whose times lie within 49.7 days of the last build is
  exact. Reconciliation rebuilds (LEADERBOARD_RECONCILE_S) re-centre it. A time
  outside the window sorts as the window's edge (exact value still answered).

The board scripts compute the same formula in Lua (`encode` in
`prelude.lua`: in doubles, exact in this range, formatted with `%.0f`) with
these constants, which `cache.py` templates into them at load (`ENCODING`);
tests/integration/test_leaderboard_encoding.py runs the Lua against
`encode_score` at the edges.
"""

from __future__ import annotations

from libs.validate import key_id

TIME_BITS = 33
TIME_SPAN = 1 << TIME_BITS
MAX_OFFSET_MS = TIME_SPAN - 1
TOTAL_BIAS = (1 << 20) - 1
MAX_TOTAL = (1 << 21) - 1
#: Half the window: the epoch lies this far before the build.
EPOCH_LEAD_MS = 1 << 32
#: The constants the Lua `encode` takes from here (`{{NAME}}` in prelude.lua).
ENCODING = {"TOTAL_BIAS": TOTAL_BIAS, "MAX_TOTAL": MAX_TOTAL, "TIME_SPAN": TIME_SPAN}


def _tag(hunt_id: str) -> str:
    return key_id("hunt_id", hunt_id)


def board(hunt_id: str) -> str:
    """The live sorted set of a hunt: member player_id, score `encode_score`."""
    return f"lb:{{{_tag(hunt_id)}}}"


def players(hunt_id: str) -> str:
    """The live hash of a hunt: player_id -> `version|total|reached_ms`."""
    return f"lb:{{{_tag(hunt_id)}}}:p"


def meta(hunt_id: str) -> str:
    """The build marker of a hunt's board: `build`, `epoch`, `built_at`, `seq`."""
    return f"lb:{{{_tag(hunt_id)}}}:meta"


def build_lock(hunt_id: str) -> str:
    """Held (`build_id|epoch`, with PX) by the one rebuild of a hunt in progress."""
    return f"lb:{{{_tag(hunt_id)}}}:build"


def tmp_board(hunt_id: str) -> str:
    """The sorted set a rebuild fills before it is RENAMEd over `board`."""
    return f"lb:{{{_tag(hunt_id)}}}:tmp"


def tmp_players(hunt_id: str) -> str:
    """The hash a rebuild fills before it is RENAMEd over `players`."""
    return f"lb:{{{_tag(hunt_id)}}}:tmp:p"


def epoch_for(build_ms: int) -> int:
    """The epoch of a board built at `build_ms`: the window is centred on it."""
    return build_ms - EPOCH_LEAD_MS


def encode_score(total: int, reached_ms: int, epoch_ms: int) -> int:
    """The sorted-set score of a total reached at `reached_ms` (see the module doc)."""
    clamped = total if total < MAX_TOTAL else MAX_TOTAL
    offset = reached_ms - epoch_ms
    if offset < 0:
        offset = 0
    elif offset > MAX_OFFSET_MS:
        offset = MAX_OFFSET_MS
    return (TOTAL_BIAS - clamped) * TIME_SPAN + offset


def decode_score(score: int, epoch_ms: int) -> tuple[int, int]:
    """(total, reached_ms) of a score, exact for values inside the limits."""
    high, offset = divmod(score, TIME_SPAN)
    return TOTAL_BIAS - high, epoch_ms + offset
