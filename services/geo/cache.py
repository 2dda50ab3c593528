"""The geo service's Redis: what it holds and the contract it must keep."""

from __future__ import annotations

from libs.rediskit import RedisContract

#: DESIGN.md's Redis table: checkpoint geo set per hunt, live players in time buckets (TTL), last location per player (30 s TTL), tag cache.
CONTRACT = RedisContract(policy="allkeys-lru")
