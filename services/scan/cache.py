"""The scan service's Redis: what it holds and the contract it must keep."""

from __future__ import annotations

from libs.rediskit import RedisContract

#: DESIGN.md's Redis table: idempotency answers (24 h TTL), rate-limit buckets, last scan per player.
CONTRACT = RedisContract(policy="allkeys-lru")
