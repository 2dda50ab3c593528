"""The scan service's Redis: idempotency answers, rate-limit buckets and the
last plausible position of each player (DESIGN.md's Redis table).

`admit()` is the one round trip at the start of a scan: one Lua script on the
player's slot that returns a stored answer (with the fingerprint of the request
it answered) if there is one, or else takes a token from the player's bucket
and marks the scan pending; it also returns the player's last position for the
speed check. `finish()` stores the answer and
the new position in one pipeline. Redis may lose any of it (allkeys-lru):
Postgres's unique key still makes scans idempotent.

A last position expires `last_scan_ttl_s` after the scan it holds (the
composition root caps that at the location retention), and the location purge
deletes the ones older than the retention (`forget_positions_before`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from libs.rediskit import AnyRedis, RedisContract
from services.scan import keys
from services.scan.model import Answer, Position, ScanInput

#: DESIGN.md's Redis table: idempotency answers (24 h TTL), rate-limit buckets,
#: last scan per player; allkeys-lru, no persistence.
CONTRACT = RedisContract(policy="allkeys-lru")

PENDING = "pending"

_ADMIT = """
local answer = redis.call('GET', KEYS[1])
local last = redis.call('HMGET', KEYS[3], 'lat', 'lon', 'acc', 'at')
if answer then
  return {1, answer, last[1], last[2], last[3], last[4]}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local capacity = tonumber(ARGV[1])
local per_ms = tonumber(ARGV[2])
local bucket = redis.call('HMGET', KEYS[2], 'tokens', 'ts')
local tokens = tonumber(bucket[1])
local ts = tonumber(bucket[2])
if tokens == nil or ts == nil then
  tokens = capacity
  ts = now
end
tokens = math.min(capacity, tokens + math.max(0, now - ts) * per_ms)
if tokens < 1 then
  return {2, tostring(math.ceil((1 - tokens) / per_ms))}
end
redis.call('HSET', KEYS[2], 'tokens', tostring(tokens - 1), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[2], math.ceil(capacity / per_ms) + 1000)
redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
return {0, '', last[1], last[2], last[3], last[4]}
"""


@dataclass(frozen=True)
class Admission:
    """What `admit` decided: `seen` -> a copy was seen before (`answer` is its
    answer, or None while it is pending; `fingerprint` that copy's request,
    when stored); `retry_after_ms` set -> rate limited; neither -> this copy
    is the first and must be processed."""

    seen: bool
    answer: Answer | None
    retry_after_ms: int | None
    last: Position | None
    fingerprint: str | None = None


def _position(fields: list) -> Position | None:
    lat, lon, acc, at = fields
    if lat is None or lon is None or at is None:
        return None
    return Position(
        lat=float(lat),
        lon=float(lon),
        accuracy_m=float(acc or 0),
        at=datetime.fromtimestamp(int(at) / 1000, UTC),
    )


def encode_answer(answer: Answer, fingerprint: str) -> str:
    return json.dumps({**answer.to_dict(), "fp": fingerprint}, separators=(",", ":"))


def decode(raw: str) -> tuple[Answer | None, str | None]:
    """(answer or None while pending, the request's fingerprint if stored)."""
    if raw.startswith(PENDING):
        return None, raw[len(PENDING) + 1 :] or None
    data = json.loads(raw)
    return Answer.from_dict(data), data.get("fp")


class ScanCache:
    def __init__(
        self,
        redis: AnyRedis,
        *,
        rate_limit: int,
        rate_window_s: float,
        pending_ttl_s: float,
        answer_ttl_s: int,
        last_scan_ttl_s: int = 86_400,
    ) -> None:
        self._redis = redis
        self._admit = redis.register_script(_ADMIT)
        self._capacity = rate_limit
        self._per_ms = rate_limit / (rate_window_s * 1000.0)
        self._pending_ttl_ms = int(pending_ttl_s * 1000)
        self._answer_ttl_s = answer_ttl_s
        self._last_ttl_ms = last_scan_ttl_s * 1000

    async def admit(self, scan: ScanInput) -> Admission:
        reply = await self._admit(
            keys=[
                keys.idempotency(*scan.key),
                keys.rate(scan.player_id),
                keys.last_scan(scan.player_id),
            ],
            args=[
                self._capacity,
                repr(self._per_ms),
                f"{PENDING}:{scan.fingerprint()}",
                self._pending_ttl_ms,
            ],
        )
        kind = int(reply[0])
        if kind == 2:
            return Admission(seen=False, answer=None, retry_after_ms=int(reply[1]), last=None)
        last = _position(list(reply[2:6]))
        if kind == 1:
            answer, fingerprint = decode(reply[1])
            return Admission(
                seen=True, answer=answer, retry_after_ms=None, last=last, fingerprint=fingerprint
            )
        return Admission(seen=False, answer=None, retry_after_ms=None, last=last)

    async def finish(
        self, scan: ScanInput, answer: Answer | None, position: Position | None
    ) -> None:
        """Stores the answer with the request's fingerprint (or forgets the
        pending marker when there is no final answer yet) and the player's new
        position, in one round trip."""
        idem = keys.idempotency(*scan.key)
        pipe = self._redis.pipeline(transaction=False)
        if answer is not None:
            pipe.set(idem, encode_answer(answer, scan.fingerprint()), ex=self._answer_ttl_s)
        else:
            pipe.delete(idem)
        if position is not None:
            last = keys.last_scan(scan.player_id)
            at_ms = int(position.at.timestamp() * 1000)
            pipe.hset(
                last,
                mapping={
                    "lat": repr(position.lat),
                    "lon": repr(position.lon),
                    "acc": repr(position.accuracy_m),
                    "at": at_ms,
                },
            )
            # Counted from the scan, not from this write: a scan applied late
            # (by the relay) does not keep its location longer.
            pipe.pexpireat(last, at_ms + self._last_ttl_ms)
        await pipe.execute()

    async def forget_positions_before(self, player_ids: Iterable[str], cutoff: datetime) -> int:
        """Deletes the last position of each player whose position is older
        than `cutoff`; returns how many were deleted. Two pipelines (read,
        then delete), not a script: pipelines of single-key commands work on
        Redis Cluster. A position written between the two is deleted too,
        which only costs that player's next speed check a Postgres read."""
        players = sorted(set(player_ids))
        if not players:
            return 0
        read = self._redis.pipeline(transaction=False)
        for player_id in players:
            read.hget(keys.last_scan(player_id), "at")
        ats = await read.execute()
        cutoff_ms = int(cutoff.timestamp() * 1000)
        old = [
            p for p, at in zip(players, ats, strict=True) if at is not None and int(at) < cutoff_ms
        ]
        if not old:
            return 0
        delete = self._redis.pipeline(transaction=False)
        for player_id in old:
            delete.delete(keys.last_scan(player_id))
        return sum(await delete.execute())

    async def pending(self, scan: ScanInput) -> bool:
        """Whether a copy of the scan is marked (pending or answered), for a
        copy waiting on another."""
        return bool(await self._redis.exists(keys.idempotency(*scan.key)))
