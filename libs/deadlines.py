"""Deadlines passed down a call: what an incoming call's deadline leaves for
the calls it makes."""

from __future__ import annotations

import time
from dataclasses import dataclass

import grpc


@dataclass(frozen=True)
class Budget:
    """The time a call may still take (monotonic clock), from its deadline;
    no deadline when `deadline` is None."""

    deadline: float | None = None

    @classmethod
    def within(cls, seconds: float | None) -> Budget:
        return cls(None if seconds is None else time.monotonic() + seconds)

    @classmethod
    def of(cls, context: grpc.aio.ServicerContext) -> Budget:
        """What the incoming call's deadline leaves."""
        return cls.within(context.time_remaining())

    def left(self) -> float | None:
        """Seconds until the deadline (negative once past), or None without one."""
        return None if self.deadline is None else self.deadline - time.monotonic()

    def timeout(self, default_s: float, margin_s: float = 0.01) -> float:
        """A timeout for a downstream step: `default_s`, shortened to what is
        left (minus a margin), never below 1 ms."""
        if self.deadline is None:
            return default_s
        return max(0.001, min(default_s, self.deadline - time.monotonic() - margin_s))

    def expired(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline
