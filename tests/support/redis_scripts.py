"""The Lua scripts of each service's cache.py (libs.rediskit.Script objects),
for the tests that check every `.lua` file is loaded and runs."""

from __future__ import annotations

from types import ModuleType

from libs.rediskit import Script
from services.geo import cache as geo_cache
from services.leaderboard import cache as leaderboard_cache
from services.scan import cache as scan_cache
from services.score import cache as score_cache

#: service -> the module that runs its scripts.
CACHE_MODULES: dict[str, ModuleType] = {
    "scan": scan_cache,
    "score": score_cache,
    "leaderboard": leaderboard_cache,
    "geo": geo_cache,
}


def scripts_of(module: ModuleType) -> list[Script]:
    """Every Script a module defines (at module level)."""
    return [value for value in vars(module).values() if isinstance(value, Script)]
