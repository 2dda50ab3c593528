"""Waiting for something the system does in the background: poll until it
holds, and fail with what was awaited (and the last thing seen) when it does
not, never fall through or leave a variable unset."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

_MAX_SHOWN = 500


async def eventually(
    probe: Callable[[], Awaitable[T] | T],
    *,
    until: Callable[[T], object] = bool,
    timeout_s: float = 15.0,
    interval_s: float = 0.02,
    what: str | Callable[[], str] = "condition",
) -> T:
    """Calls `probe()` (a coroutine function or a plain one) every `interval_s`
    until `until(value)` holds for what it returned, and returns that value.
    After `timeout_s` it raises AssertionError naming `what` (a string, or a
    function giving one at that moment) and the last value seen: a bound
    against hangs, not a speed assertion. An exception the probe raises (an
    assert on an unexpected status, say) ends the wait at once."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if inspect.isawaitable(value):
            value = await value
        if until(value):
            return value
        if time.monotonic() > deadline:
            described = what() if callable(what) else what
            message = f"{described} did not happen within {timeout_s:g}s"
            if not isinstance(value, bool):
                shown = repr(value)
                if len(shown) > _MAX_SHOWN:
                    shown = shown[:_MAX_SHOWN] + "..."
                message += f"; last seen: {shown}"
            raise AssertionError(message)
        await asyncio.sleep(interval_s)
