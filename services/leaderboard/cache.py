"""The leaderboard service's Redis: what it holds and the contract it must keep."""

from __future__ import annotations

from libs.rediskit import RedisContract

#: DESIGN.md's Redis table: one sorted set per hunt and its build marker; sized 1.5x the working set.
CONTRACT = RedisContract(policy="noeviction")
