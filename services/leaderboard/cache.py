"""The leaderboard's Redis: one board per hunt (keys.py), read and written only
through the Lua scripts beside this module (`<name>.lua`, the shared functions
in `prelude.lua`, the score encoding's constants templated in from keys.py;
run by `libs.rediskit.Script`), each touching the one slot of its hunt.

- `submit`: one script per hunt, pipelined across the hunts of a batch (on
  Redis Cluster, which refuses EVALSHA in pipelines: concurrent calls). Per
  player the newest version wins; a version not newer than the stored one
  changes nothing, so replays are harmless. It writes the live board and,
  while a rebuild holds the lock, the board being rebuilt too. It never
  creates a board: a hunt without a build marker answers "missing".
- reads (`top`, `rank`, `around`, `state`) are `no-writes` scripts: one round
  trip, a consistent view, and they still run when Redis is at maxmemory.
- rebuilds: `begin_build` takes the per-hunt lock (SET NX PX) and clears
  leftovers, `write_page` adds a page of totals to the temporary keys with
  the same version check (so a submit that raced ahead is never undone),
  `finish_build` RENAMEs them over the live keys and writes the build marker
  in one script; `abort_build` deletes them. Temporary keys and the lock
  expire together (PX refreshed per page), so a process that dies mid-rebuild
  leaves nothing behind on a `noeviction` Redis.

Every call goes through one `libs.rediskit.RedisGuard`: Redis refusing a
write at maxmemory becomes `ResourceExhausted`; Redis being unreachable
becomes `Unavailable`. Results are model.py's frozen dataclasses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError
from redis.exceptions import TimeoutError as RedisTimeoutError

from libs import errors
from libs.rediskit import AnyRedis, RedisContract, RedisGuard, Script
from services.leaderboard import keys
from services.leaderboard.model import (
    Around,
    BoardState,
    BuildLost,
    Cursor,
    Entry,
    SubmitCounts,
    TopPage,
    Update,
)

#: the Redis table of docs/ARCHITECTURE.md: one sorted set per hunt and its build marker; sized 1.5x the working set.
CONTRACT = RedisContract(policy="noeviction")

_HERE = Path(__file__).parent


def _board_script(name: str) -> Script:
    """A script that uses prelude.lua's functions (and so the encoding's constants)."""
    return Script(_HERE / name, prelude=_HERE / "prelude.lua", constants=keys.ENCODING)


#: A hunt's updates applied to its board (and to the one being rebuilt).
_SUBMIT = _board_script("submit.lua")
#: Read-only (`no-writes`): they still run when Redis is at maxmemory.
_TOP = _board_script("top.lua")
_RANK = Script(_HERE / "rank.lua")
_AROUND = Script(_HERE / "around.lua")
_STATE = Script(_HERE / "state.lua")
#: The rebuild protocol (rebuild.py); finishing and aborting free memory (`allow-oom`).
_BEGIN_BUILD = Script(_HERE / "begin_build.lua")
_WRITE_PAGE = _board_script("write_page.lua")
_FINISH_BUILD = _board_script("finish_build.lua")
_ABORT_BUILD = Script(_HERE / "abort_build.lua")


def _blob(updates: Sequence[Update]) -> str:
    """Updates as the scripts read them: `player version total reached_ms` lines
    (ids are validated, so they hold no space or newline)."""
    return "\n".join([f"{u.player_id} {u.version} {u.total} {u.reached_ms}" for u in updates])


def _entries(start: int, members: list[str], values: list[str | None]) -> tuple[Entry, ...]:
    result = []
    for i, (player, value) in enumerate(zip(members, values, strict=True)):
        if value is None:  # cannot happen: both keys are written by the same scripts
            raise errors.Unavailable(f"board entry of {player} is incomplete", retry_after_s=1.0)
        _, total, reached = value.split("|")
        result.append(Entry(start + i + 1, player, int(total), int(reached)))
    return tuple(result)


class BoardStore:
    """The boards of every hunt in one Redis (or Redis Cluster)."""

    def __init__(self, client: AnyRedis, retry_after_s: float = 1.0) -> None:
        self._redis = client
        self._retry_after_s = retry_after_s
        # No budget but the client's socket timeout. Other errors (a script's
        # bug) are not Redis being unavailable: they propagate.
        self._guard = RedisGuard(
            "leaderboard redis",
            catch=(OutOfMemoryError, RedisConnectionError, RedisTimeoutError),
            error=self._error,
        )

    def _error(self, cause: BaseException | None) -> Exception:
        if isinstance(cause, OutOfMemoryError):
            return errors.ResourceExhausted(
                "the leaderboard's Redis is at maxmemory",
                retry_after_s=self._retry_after_s,
                reason="BOARD_MEMORY_FULL",
            )
        return errors.Unavailable(
            f"the leaderboard's Redis is unreachable: {cause}",
            retry_after_s=self._retry_after_s,
            reason="BOARD_STORE_UNAVAILABLE",
        )

    async def _run(self, script: Script, keys_: Sequence[str], args: Sequence[object]) -> Any:
        return await self._guard.call(lambda: script.run(self._redis, keys_, args), op=script.name)

    # -- writes -------------------------------------------------------------

    async def submit(
        self, by_hunt: Mapping[str, Sequence[Update]]
    ) -> dict[str, SubmitCounts | None]:
        """Applies each hunt's updates (one script per hunt, one round trip).
        None for a hunt that has no board (nothing written)."""
        hunts = list(by_hunt)
        calls = [(_submit_keys(h), [_blob(by_hunt[h])]) for h in hunts]
        replies = await self._guard.call(lambda: _SUBMIT.run_each(self._redis, calls), op="submit")
        return {
            hunt: SubmitCounts(int(r[1]), int(r[2])) if int(r[0]) == 1 else None
            for hunt, r in zip(hunts, replies, strict=True)
        }

    async def begin_build(self, hunt_id: str, build_id: str, epoch_ms: int, ttl_ms: int) -> bool:
        """Takes the hunt's rebuild lock; False when another rebuild holds it."""
        keys_ = [keys.build_lock(hunt_id), keys.tmp_board(hunt_id), keys.tmp_players(hunt_id)]
        taken = await self._run(_BEGIN_BUILD, keys_, [build_id, epoch_ms, ttl_ms])
        return int(taken) == 1

    async def write_page(
        self, hunt_id: str, build_id: str, ttl_ms: int, updates: Sequence[Update]
    ) -> None:
        keys_ = [keys.build_lock(hunt_id), keys.tmp_board(hunt_id), keys.tmp_players(hunt_id)]
        written = await self._run(_WRITE_PAGE, keys_, [build_id, ttl_ms, _blob(updates)])
        if int(written) < 0:
            raise BuildLost(f"rebuild {build_id} of {hunt_id} lost its lock")

    async def finish_build(self, hunt_id: str, build_id: str, built_at_ms: int) -> int:
        """Publishes the rebuilt board atomically; the number of players on it."""
        keys_ = [
            keys.build_lock(hunt_id),
            keys.tmp_board(hunt_id),
            keys.tmp_players(hunt_id),
            keys.board(hunt_id),
            keys.players(hunt_id),
            keys.meta(hunt_id),
        ]
        players = int(await self._run(_FINISH_BUILD, keys_, [build_id, built_at_ms]))
        if players < 0:
            raise BuildLost(f"rebuild {build_id} of {hunt_id} lost its lock")
        return players

    async def abort_build(self, hunt_id: str, build_id: str) -> None:
        """Deletes the rebuild's lock and temporary keys (if still its own)."""
        keys_ = [keys.build_lock(hunt_id), keys.tmp_board(hunt_id), keys.tmp_players(hunt_id)]
        await self._run(_ABORT_BUILD, keys_, [build_id])

    # -- reads --------------------------------------------------------------

    async def state(self, hunt_id: str) -> BoardState:
        build, built_at, seq, rebuilding = await self._run(
            _STATE, [keys.meta(hunt_id), keys.build_lock(hunt_id)], ()
        )
        return BoardState(build, int(built_at), int(seq), int(rebuilding) == 1)

    async def top(self, hunt_id: str, limit: int, cursor: Cursor | None) -> TopPage | None:
        """A page of the board from `cursor` (None: the top); None when missing."""
        args: list[object] = [limit]
        if cursor is not None:
            args += [cursor.total, cursor.reached_ms, cursor.player_id]
        reply = await self._run(_TOP, _read_keys(hunt_id), args)
        if int(reply[0]) == 0:
            return None
        count, start, members, values = int(reply[1]), int(reply[2]), reply[3], reply[4]
        entries = _entries(start, members, values)
        more = entries and start + len(entries) < count
        last = entries[-1] if more else None
        return TopPage(
            entries,
            count,
            Cursor(last.total, last.reached_ms, last.player_id) if last is not None else None,
        )

    async def rank(self, hunt_id: str, player_id: str) -> tuple[Entry | None, int] | None:
        """(the player's entry or None when not on the board, player count);
        None when the board is missing."""
        reply = await self._run(_RANK, _read_keys(hunt_id), [player_id])
        status = int(reply[0])
        if status == 0:
            return None
        if status == 2:
            return None, int(reply[1])
        (entry,) = _entries(int(reply[2]), [player_id], [reply[3]])
        return entry, int(reply[1])

    async def around(self, hunt_id: str, player_id: str, n: int) -> Around | None:
        """The player and up to n players on each side; entries empty when the
        player is not on the board; None when the board is missing."""
        reply = await self._run(_AROUND, _read_keys(hunt_id), [player_id, n])
        status = int(reply[0])
        if status == 0:
            return None
        if status == 2:
            return Around((), int(reply[1]))
        return Around(_entries(int(reply[2]), reply[3], reply[4]), int(reply[1]))


def _submit_keys(hunt_id: str) -> list[str]:
    return [
        keys.board(hunt_id),
        keys.players(hunt_id),
        keys.meta(hunt_id),
        keys.build_lock(hunt_id),
        keys.tmp_board(hunt_id),
        keys.tmp_players(hunt_id),
    ]


def _read_keys(hunt_id: str) -> list[str]:
    return [keys.meta(hunt_id), keys.board(hunt_id), keys.players(hunt_id)]
