"""The scan service's Redis: idempotency answers, rate-limit buckets and the
last plausible position of each player (the Redis table of docs/ARCHITECTURE.md).

`admit()` is the one round trip at the start of a scan: one Lua script
(`admit.lua`, run by `libs.rediskit.Script`) on the player's slot that
returns a stored answer (with the fingerprint of the request it answered) if
there is one, or else takes a token from the player's bucket and marks the
scan pending; it also returns the player's last position for the speed check.
`finish()` stores the answer and the new position in one script. Redis may
lose any of it (allkeys-lru): Postgres's unique key still makes scans idempotent.

A last position expires `last_scan_ttl_s` after the scan it holds (the
composition root caps that at the location retention), and the location purge
deletes the ones older than the retention (`forget_positions_before`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from libs.rediskit import AnyRedis, RedisContract, Script
from libs.timestamps import from_ms, to_ms
from services.scan import keys
from services.scan.model import Answer, Position, ScanInput

#: the Redis table of docs/ARCHITECTURE.md: idempotency answers (24 h TTL), rate-limit buckets,
#: last scan per player; allkeys-lru, no persistence.
CONTRACT = RedisContract(policy="allkeys-lru")

PENDING = "pending"

#: Admission (`admit`): stored answer, or a token and the pending mark.
_ADMIT = Script(Path(__file__).with_name("admit.lua"))
_FORGET = Script(Path(__file__).with_name("forget_pending.lua"))
_FINISH = Script(Path(__file__).with_name("finish.lua"))


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
        at=from_ms(int(at)),
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
        self._capacity = rate_limit
        self._per_ms = rate_limit / (rate_window_s * 1000.0)
        self._pending_ttl_ms = int(pending_ttl_s * 1000)
        self._answer_ttl_s = answer_ttl_s
        self._last_ttl_ms = last_scan_ttl_s * 1000

    async def admit(self, scan: ScanInput) -> Admission:
        reply = await _ADMIT.run(
            self._redis,
            [
                keys.idempotency(*scan.key),
                keys.rate(scan.player_id),
                keys.last_scan(scan.player_id),
            ],
            [
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
        """Stores the answer with the request's fingerprint and the player's
        new position: one script (`finish.lua`), one command (as a pipeline of
        its three commands it cost the scan process 1.4x the CPU)."""
        encoded = "" if answer is None else encode_answer(answer, scan.fingerprint())
        where: tuple = ("", "", "", "", "")
        if position is not None:
            at_ms = to_ms(position.at)
            where = (repr(position.lat), repr(position.lon), repr(position.accuracy_m),
                     at_ms, at_ms + self._last_ttl_ms)  # fmt: skip
        await _FINISH.run(
            self._redis,
            [keys.idempotency(*scan.key), keys.last_scan(scan.player_id)],
            [encoded, self._answer_ttl_s, *where],
        )

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
        cutoff_ms = to_ms(cutoff)
        old = [
            p for p, at in zip(players, ats, strict=True) if at is not None and int(at) < cutoff_ms
        ]
        if not old:
            return 0
        delete = self._redis.pipeline(transaction=False)
        for player_id in old:
            delete.delete(keys.last_scan(player_id))
        return sum(await delete.execute())

    async def forget(self, scan: ScanInput) -> bool:
        """Drops this request's own pending mark (a copy that gave up before
        its scan had an answer), leaving any other value (another request's
        mark, or the answer a driver stored meanwhile) alone."""
        dropped = await _FORGET.run(
            self._redis, [keys.idempotency(*scan.key)], [f"{PENDING}:{scan.fingerprint()}"]
        )
        return bool(dropped)

    async def pending(self, scan: ScanInput) -> bool:
        """Whether a copy of the scan is marked (pending or answered), for a
        copy waiting on another."""
        return bool(await self._redis.exists(keys.idempotency(*scan.key)))
