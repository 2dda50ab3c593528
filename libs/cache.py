"""Bounded in-process (L1) caches and single-flight.

`TtlCache` is bounded in entries (least recently used goes first) and in
time (an entry older than its TTL is a miss). `SingleFlight` makes concurrent
callers of one key share one call, so a burst of misses costs one load.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Final, Generic, Literal, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _Missing(enum.Enum):
    MISSING = enum.auto()


#: What `TtlCache.get` answers for an absent or expired key (`is MISSING`
#: narrows the type for mypy).
MISSING: Final = _Missing.MISSING
Missing = Literal[_Missing.MISSING]


class TtlCache(Generic[K, V]):
    """An LRU map with at most `max_entries` entries, each valid `ttl_s` seconds."""

    def __init__(
        self, max_entries: int, ttl_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_entries < 1 or ttl_s <= 0:
            raise ValueError("a cache needs max_entries >= 1 and ttl_s > 0")
        self._max = max_entries
        self._ttl = ttl_s
        self._clock = clock
        self._data: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K) -> V | Missing:
        """The value, or MISSING when absent or expired."""
        item = self._data.get(key)
        if item is None:
            return MISSING
        expires, value = item
        if expires <= self._clock():
            del self._data[key]
            return MISSING
        self._data.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._data[key] = (self._clock() + self._ttl, value)
        self._data.move_to_end(key)
        while len(self._data) > self._max:
            self._data.popitem(last=False)

    def invalidate(self, key: K) -> None:
        self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


class SingleFlight(Generic[K, V]):
    """Concurrent `do(key, load)` calls for one key run `load` once and share
    its result (or its exception). The load runs in its own task, so a caller
    that is cancelled does not cancel it for the others."""

    def __init__(self) -> None:
        self._inflight: dict[K, asyncio.Task[V]] = {}

    async def do(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(load())
            self._inflight[key] = task
            task.add_done_callback(functools.partial(self._forget, key))
        return await asyncio.shield(task)

    def _forget(self, key: K, task: asyncio.Task[V]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # mark retrieved: every waiter got it already

    def __len__(self) -> int:
        return len(self._inflight)
