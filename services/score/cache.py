"""The score service's Redis: what it holds and the contract it must keep."""

from __future__ import annotations

from libs.rediskit import RedisContract

#: DESIGN.md's Redis table: hot tier: total, found, version per (hunt, player) (30 s TTL); unlocked set.
CONTRACT = RedisContract(policy="allkeys-lru")
