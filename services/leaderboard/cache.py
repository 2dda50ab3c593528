"""The leaderboard's Redis: one board per hunt (keys.py), read and written only
through the Lua scripts below, each touching the one slot of its hunt.

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

Redis refusing a write at maxmemory becomes `ResourceExhausted`; Redis being
unreachable becomes `Unavailable`. Results are small frozen dataclasses.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from redis.asyncio import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, OutOfMemoryError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from libs import errors
from libs.rediskit import AnyRedis, RedisContract
from services.leaderboard import keys

#: DESIGN.md's Redis table: one sorted set per hunt and its build marker; sized 1.5x the working set.
CONTRACT = RedisContract(policy="noeviction")


@dataclass(frozen=True, slots=True)
class Update:
    """A player's total as the score service sent it."""

    player_id: str
    total: int
    reached_ms: int
    version: int


@dataclass(frozen=True, slots=True)
class Entry:
    rank: int  # 1-based
    player_id: str
    total: int
    reached_ms: int


@dataclass(frozen=True, slots=True)
class Cursor:
    """The position after an entry: where the next page starts."""

    total: int
    reached_ms: int
    player_id: str


@dataclass(frozen=True, slots=True)
class TopPage:
    entries: tuple[Entry, ...]
    player_count: int
    next_cursor: Cursor | None


@dataclass(frozen=True, slots=True)
class Around:
    entries: tuple[Entry, ...]
    player_count: int


@dataclass(frozen=True, slots=True)
class SubmitCounts:
    applied: int
    stale: int


@dataclass(frozen=True, slots=True)
class BoardState:
    """What a board is: its build (empty when missing), change counter, and
    whether a rebuild holds the lock."""

    build: str
    built_at_ms: int
    seq: int
    rebuilding: bool

    @property
    def exists(self) -> bool:
        return bool(self.build)


class BuildLost(errors.Unavailable):
    """The rebuild's lock expired or was taken over; its work is void."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retry_after_s=1.0, reason="BOARD_REBUILD_LOST")


_PRELUDE = """
local BIAS, MAX_TOTAL, SPAN = 1048575, 2097151, 8589934592
-- keys.encode_score, exact in doubles: the result lies in [-2^53, 2^53 - 1]
local function encode(t, ms, epoch)
  if t > MAX_TOTAL then t = MAX_TOTAL end
  local off = ms - epoch
  if off < 0 then off = 0 elseif off >= SPAN then off = SPAN - 1 end
  return string.format('%.0f', (BIAS - t) * SPAN + off)
end
-- a > b for decimal strings without leading zeros (exact beyond 2^53, and
-- independent of the server's locale, which Lua's string < is not)
local function newer(a, b)
  if #a ~= #b then return #a > #b end
  if #a < 16 then return tonumber(a) > tonumber(b) end
  for i = 1, #a do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x > y end
  end
  return false
end
-- a <= b byte-wise (the order Redis gives equal scores)
local function not_after(a, b)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a <= #b
end
-- cmd key args..., in chunks (Lua's unpack is bounded)
local function chunked(cmd, key, flat, n)
  for i = 1, #flat, n do
    redis.call(cmd, key, unpack(flat, i, math.min(i + n - 1, #flat)))
  end
end
-- Updates come as one ARGV blob of lines `player version total reached_ms`
-- (one argument is far cheaper to send than four per update). Per player the
-- newest version is kept; the others are stale.
local function collapse(blob)
  local order, best, stale = {}, {}, 0
  for p, v, t, m in string.gmatch(blob, '(%S+) (%d+) (%d+) (%d+)') do
    local b = best[p]
    if not b then
      best[p] = {v, t, m}
      order[#order + 1] = p
    else
      stale = stale + 1
      if newer(v, b[1]) then best[p] = {v, t, m} end
    end
  end
  return order, best, stale
end
-- Writes each kept update whose version is newer than the board's; marks changed[p].
local function apply(board, players, epoch, order, best, changed)
  local current = {}
  for i = 1, #order, 1000 do
    local part = redis.call('HMGET', players, unpack(order, i, math.min(i + 999, #order)))
    for j = 1, #part do current[i + j - 1] = part[j] end
  end
  local zargs, hargs = {}, {}
  for k, p in ipairs(order) do
    local u = best[p]
    local cur = current[k]
    if not cur or newer(u[1], string.match(cur, '^(%d+)')) then
      zargs[#zargs + 1] = encode(tonumber(u[2]), tonumber(u[3]), epoch)
      zargs[#zargs + 1] = p
      hargs[#hargs + 1] = p
      hargs[#hargs + 1] = u[1] .. '|' .. u[2] .. '|' .. u[3]
      changed[p] = true
    end
  end
  chunked('ZADD', board, zargs, 2000)
  chunked('HSET', players, hargs, 2000)
end
-- The epoch in a lock value `build_id|epoch` owned by `id`, or nil.
local function owned(lock, id)
  if not lock or string.sub(lock, 1, #id + 1) ~= id .. '|' then return nil end
  return tonumber(string.sub(lock, #id + 2))
end
"""


def _with_prelude(shebang: str, body: str) -> str:
    return f"{shebang}\n{_PRELUDE}{body}"


# KEYS: board, players, meta, lock, tmp_board, tmp_players. ARGV: the updates (`_blob`).
# -> {1, applied, stale}, or {0, 0, 0} when the hunt has no board (nothing written).
_SUBMIT = _with_prelude(
    "#!lua",
    """
local epoch = redis.call('HGET', KEYS[3], 'epoch')
if not epoch then return {0, 0, 0} end
local lock = redis.call('GET', KEYS[4])
local order, best, stale = collapse(ARGV[1])
local changed = {}
apply(KEYS[1], KEYS[2], tonumber(epoch), order, best, changed)
if lock then
  apply(KEYS[5], KEYS[6], tonumber(string.match(lock, '|(%-?%d+)$')), order, best, changed)
  local ttl = redis.call('PTTL', KEYS[4])
  if ttl > 0 then
    redis.call('PEXPIRE', KEYS[5], ttl)
    redis.call('PEXPIRE', KEYS[6], ttl)
  end
end
local applied = 0
for _, p in ipairs(order) do
  if changed[p] then applied = applied + 1 else stale = stale + 1 end
end
if applied > 0 then redis.call('HINCRBY', KEYS[3], 'seq', 1) end
return {1, applied, stale}
""",
)

# KEYS: meta, board, players. ARGV: limit [, total, reached_ms, player]: the cursor.
# -> {0} missing, or {1, player_count, start, members, values}
_TOP = _with_prelude(
    "#!lua flags=no-writes",
    """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then return {0} end
local count = redis.call('ZCARD', KEYS[2])
local start = 0
if #ARGV >= 4 then
  local s = encode(tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(epoch))
  local p = ARGV[4]
  local cur = redis.call('ZSCORE', KEYS[2], p)
  if cur and tonumber(cur) == tonumber(s) then
    start = redis.call('ZRANK', KEYS[2], p) + 1
  else
    -- the cursor's player moved: everything below score s, plus the members
    -- with exactly score s that sort before or at p
    start = redis.call('ZCOUNT', KEYS[2], '-inf', '(' .. s)
    local offset = 0
    while true do
      local same = redis.call('ZRANGEBYSCORE', KEYS[2], s, s, 'LIMIT', offset, 256)
      local past = false
      for _, m in ipairs(same) do
        if not_after(m, p) then start = start + 1 else past = true break end
      end
      if past or #same < 256 then break end
      offset = offset + 256
    end
  end
end
local members = redis.call('ZRANGE', KEYS[2], start, start + tonumber(ARGV[1]) - 1)
local values = {}
if #members > 0 then values = redis.call('HMGET', KEYS[3], unpack(members)) end
return {1, count, start, members, values}
""",
)

# KEYS: meta, board, players. ARGV: player.
# -> {0} missing, {2, count} not on the board, or {1, count, rank0, value}
_RANK = """#!lua flags=no-writes
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then return {0} end
local count = redis.call('ZCARD', KEYS[2])
local rank = redis.call('ZRANK', KEYS[2], ARGV[1])
if not rank then return {2, count} end
return {1, count, rank, redis.call('HGET', KEYS[3], ARGV[1])}
"""

# KEYS: meta, board, players. ARGV: player, n.
# -> {0} missing, {2, count} not on the board, or {1, count, start, members, values}
_AROUND = """#!lua flags=no-writes
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then return {0} end
local count = redis.call('ZCARD', KEYS[2])
local rank = redis.call('ZRANK', KEYS[2], ARGV[1])
if not rank then return {2, count} end
local n = tonumber(ARGV[2])
local start = math.max(0, rank - n)
local members = redis.call('ZRANGE', KEYS[2], start, rank + n)
return {1, count, start, members, redis.call('HMGET', KEYS[3], unpack(members))}
"""

# KEYS: meta, lock. -> {build, built_at, seq, rebuilding}
_STATE = """#!lua flags=no-writes
local m = redis.call('HMGET', KEYS[1], 'build', 'built_at', 'seq')
return {m[1] or '', m[2] or '0', m[3] or '0', redis.call('EXISTS', KEYS[2])}
"""

# KEYS: lock, tmp_board, tmp_players. ARGV: build_id, epoch, ttl_ms. -> 1 taken, 0 held by another
_BEGIN = """#!lua
if redis.call('SET', KEYS[1], ARGV[1] .. '|' .. ARGV[2], 'NX', 'PX', ARGV[3]) then
  redis.call('DEL', KEYS[2], KEYS[3])
  return 1
end
return 0
"""

# KEYS: lock, tmp_board, tmp_players. ARGV: build_id, ttl_ms, the updates. -> -1 lock lost
_PAGE = _with_prelude(
    "#!lua",
    """
local epoch = owned(redis.call('GET', KEYS[1]), ARGV[1])
if not epoch then return -1 end
local order, best = collapse(ARGV[3])
apply(KEYS[2], KEYS[3], epoch, order, best, {})
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[2]) end
return #order
""",
)

# KEYS: lock, tmp_board, tmp_players, board, players, meta. ARGV: build_id, built_at_ms.
# -> players on the new board, or -1 when the lock was lost. Frees memory, so allow-oom.
_FINISH = _with_prelude(
    "#!lua flags=allow-oom",
    """
local epoch = owned(redis.call('GET', KEYS[1]), ARGV[1])
if not epoch then return -1 end
redis.call('UNLINK', KEYS[4], KEYS[5])
for i = 2, 3 do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('PERSIST', KEYS[i])
    redis.call('RENAME', KEYS[i], KEYS[i + 2])
  end
end
redis.call('HSET', KEYS[6], 'build', ARGV[1], 'epoch', string.format('%.0f', epoch), 'built_at', ARGV[2])
redis.call('HINCRBY', KEYS[6], 'seq', 1)
redis.call('DEL', KEYS[1])
return redis.call('ZCARD', KEYS[4])
""",
)

# KEYS: lock, tmp_board, tmp_players. ARGV: build_id. Frees memory, so allow-oom.
_ABORT = """#!lua flags=allow-oom
local lock = redis.call('GET', KEYS[1])
if lock and string.sub(lock, 1, #ARGV[1] + 1) == ARGV[1] .. '|' then
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
  return 1
end
return 0
"""


class _Script:
    """A Lua script run by EVALSHA, loaded on NOSCRIPT (a restarted Redis)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def run(self, client: AnyRedis, keys_: Sequence[str], args: Sequence[object]):
        try:
            return await client.evalsha(self.sha, len(keys_), *keys_, *args)
        except NoScriptError:
            await client.script_load(self.source)
            return await client.evalsha(self.sha, len(keys_), *keys_, *args)


_SCRIPTS = {
    name: _Script(source)
    for name, source in (
        ("submit", _SUBMIT),
        ("top", _TOP),
        ("rank", _RANK),
        ("around", _AROUND),
        ("state", _STATE),
        ("begin", _BEGIN),
        ("page", _PAGE),
        ("finish", _FINISH),
        ("abort", _ABORT),
    )
}


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

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except OutOfMemoryError as exc:
            raise errors.ResourceExhausted(
                "the leaderboard's Redis is at maxmemory",
                retry_after_s=self._retry_after_s,
                reason="BOARD_MEMORY_FULL",
            ) from exc
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise errors.Unavailable(
                f"the leaderboard's Redis is unreachable: {exc}",
                retry_after_s=self._retry_after_s,
                reason="BOARD_STORE_UNAVAILABLE",
            ) from exc

    # -- writes -------------------------------------------------------------

    async def submit(
        self, by_hunt: Mapping[str, Sequence[Update]]
    ) -> dict[str, SubmitCounts | None]:
        """Applies each hunt's updates (one script per hunt, one pipeline).
        None for a hunt that has no board (nothing written)."""
        script = _SCRIPTS["submit"]
        hunts = list(by_hunt)
        with self._errors():
            if len(hunts) == 1:
                hunt = hunts[0]
                replies = [
                    await script.run(self._redis, _submit_keys(hunt), [_blob(by_hunt[hunt])])
                ]
            else:
                replies = await self._pipelined(
                    script, [(_submit_keys(h), [_blob(by_hunt[h])]) for h in hunts]
                )
        return {
            hunt: SubmitCounts(int(r[1]), int(r[2])) if int(r[0]) == 1 else None
            for hunt, r in zip(hunts, replies, strict=True)
        }

    async def _pipelined(
        self, script: _Script, calls: list[tuple[list[str], list[object]]]
    ) -> list:
        if isinstance(self._redis, RedisCluster):  # no EVALSHA in cluster pipelines:
            # concurrent calls, each to the master of its hunt's slot
            return list(await asyncio.gather(*(script.run(self._redis, *c) for c in calls)))
        pipe = self._redis.pipeline(transaction=False)
        for keys_, args in calls:
            pipe.evalsha(script.sha, len(keys_), *keys_, *args)
        replies = await pipe.execute(raise_on_error=False)
        for i, reply in enumerate(replies):
            if isinstance(reply, NoScriptError):
                replies[i] = await script.run(self._redis, *calls[i])
        for reply in replies:
            if isinstance(reply, ResponseError):
                raise reply
        return replies

    async def begin_build(self, hunt_id: str, build_id: str, epoch_ms: int, ttl_ms: int) -> bool:
        """Takes the hunt's rebuild lock; False when another rebuild holds it."""
        keys_ = [keys.build_lock(hunt_id), keys.tmp_board(hunt_id), keys.tmp_players(hunt_id)]
        with self._errors():
            taken = await _SCRIPTS["begin"].run(self._redis, keys_, [build_id, epoch_ms, ttl_ms])
        return int(taken) == 1

    async def write_page(
        self, hunt_id: str, build_id: str, ttl_ms: int, updates: Sequence[Update]
    ) -> None:
        keys_ = [keys.build_lock(hunt_id), keys.tmp_board(hunt_id), keys.tmp_players(hunt_id)]
        with self._errors():
            written = await _SCRIPTS["page"].run(
                self._redis, keys_, [build_id, ttl_ms, _blob(updates)]
            )
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
        with self._errors():
            players = int(await _SCRIPTS["finish"].run(self._redis, keys_, [build_id, built_at_ms]))
        if players < 0:
            raise BuildLost(f"rebuild {build_id} of {hunt_id} lost its lock")
        return players

    async def abort_build(self, hunt_id: str, build_id: str) -> None:
        """Deletes the rebuild's lock and temporary keys (if still its own)."""
        keys_ = [keys.build_lock(hunt_id), keys.tmp_board(hunt_id), keys.tmp_players(hunt_id)]
        with self._errors():
            await _SCRIPTS["abort"].run(self._redis, keys_, [build_id])

    # -- reads --------------------------------------------------------------

    async def state(self, hunt_id: str) -> BoardState:
        with self._errors():
            build, built_at, seq, rebuilding = await _SCRIPTS["state"].run(
                self._redis, [keys.meta(hunt_id), keys.build_lock(hunt_id)], ()
            )
        return BoardState(build, int(built_at), int(seq), int(rebuilding) == 1)

    async def top(self, hunt_id: str, limit: int, cursor: Cursor | None) -> TopPage | None:
        """A page of the board from `cursor` (None: the top); None when missing."""
        args: list[object] = [limit]
        if cursor is not None:
            args += [cursor.total, cursor.reached_ms, cursor.player_id]
        with self._errors():
            reply = await _SCRIPTS["top"].run(self._redis, _read_keys(hunt_id), args)
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
        with self._errors():
            reply = await _SCRIPTS["rank"].run(self._redis, _read_keys(hunt_id), [player_id])
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
        with self._errors():
            reply = await _SCRIPTS["around"].run(self._redis, _read_keys(hunt_id), [player_id, n])
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
