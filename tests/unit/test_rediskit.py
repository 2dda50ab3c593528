"""libs.rediskit's script runner (how a `.lua` file becomes a script: prelude,
constants, shebang) and its call guard (budget, errors, failure policy,
breaker, bound), without Redis. The scripts on a real Redis:
tests/integration/test_redis_scripts.py."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from libs import errors, rediskit
from libs.rediskit import Breaker, CacheUnavailable, Failure, RedisGuard, Script
from tests.support.infra import REPO
from tests.support.redis_scripts import CACHE_MODULES, scripts_of


def lua(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# -- scripts ----------------------------------------------------------------


def test_a_prelude_goes_after_the_shebang_and_constants_are_filled_in(tmp_path):
    prelude = lua(tmp_path, "prelude.lua", "local LIMIT = {{LIMIT}}\n")
    with_flags = Script(
        lua(tmp_path, "a.lua", "#!lua flags=no-writes\nreturn LIMIT + {{STEP}}\n"),
        prelude=prelude,
        constants={"LIMIT": 2_097_151, "STEP": -1},
    )
    assert with_flags.source == "#!lua flags=no-writes\nlocal LIMIT = 2097151\nreturn LIMIT + -1\n"
    plain = Script(
        lua(tmp_path, "b.lua", "return LIMIT\n"), prelude=prelude, constants={"LIMIT": 7}
    )
    assert plain.source == "local LIMIT = 7\nreturn LIMIT\n"
    assert plain.name == "b.lua" and len(plain.sha) == 40 and plain.sha != with_flags.sha


def test_constants_must_match_the_placeholders(tmp_path):
    path = lua(tmp_path, "c.lua", "return {{A}}\n")
    with pytest.raises(ValueError, match=r"c.lua: no value given for \{\{A\}\}"):
        Script(path)
    with pytest.raises(ValueError, match=r"constants \['B'\] are not used"):
        Script(path, constants={"A": 1, "B": 2})
    with pytest.raises(TypeError, match="must be an int"):
        Script(path, constants={"A": "1"})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="must be an int"):
        Script(path, constants={"A": True})
    # Lua's own braces are no placeholders
    assert Script(lua(tmp_path, "d.lua", "return {{1}, {x = 2}}\n")).source.startswith(
        "return {{1}"
    )


def test_every_lua_file_is_run_by_its_services_cache():
    """Each `.lua` file beside a service's code is a Script (or the prelude
    of one) of that service's cache.py, so none is dead or loaded nowhere."""
    on_disk = set((REPO / "services").glob("*/*.lua"))
    used: set[Path] = set()
    for module in CACHE_MODULES.values():
        for script in scripts_of(module):
            assert script.path.parent == Path(module.__file__).parent, script
            used.add(script.path)
            if script.prelude is not None:
                used.add(script.prelude)
    assert used == on_disk
    flags = {
        s.name: s.source.split("\n", 1)[0] for m in CACHE_MODULES.values() for s in scripts_of(m)
    }
    # the leaderboard's flags survived the prelude (Redis reads them on line 1 only)
    assert flags["top.lua"] == flags["rank.lua"] == "#!lua flags=no-writes"
    assert flags["finish_build.lua"] == flags["abort_build.lua"] == "#!lua flags=allow-oom"
    assert flags["submit.lua"] == flags["write_page.lua"] == "#!lua"
    assert not flags["admit.lua"].startswith("#!")  # scan, score, geo: no flags, as before


# -- the guard --------------------------------------------------------------


async def answer(value: object = "ok", delay_s: float = 0.0) -> object:
    await asyncio.sleep(delay_s)
    return value


async def fail(exc: BaseException) -> object:
    raise exc


async def test_a_failure_raises_cache_unavailable_or_returns_the_default():
    failures: list[Failure] = []
    guard = RedisGuard("test redis", timeout_s=1.0, on_failure=failures.append)
    assert await guard.call(lambda: answer(5)) == 5
    with pytest.raises(CacheUnavailable) as raised:
        await guard.call(lambda: fail(RedisConnectionError("refused")), op="read")
    err = raised.value
    assert isinstance(err, errors.Unavailable) and err.reason == "CACHE_UNAVAILABLE"
    assert err.retry_after_s == 1.0 and str(err) == "test redis: refused"
    assert isinstance(err.__cause__, RedisConnectionError)
    # the policy per call: a miss, or failing open
    assert await guard.call(lambda: fail(ResponseError("WRONGTYPE")), default=None) is None
    assert await guard.call(lambda: fail(OSError("reset")), default=False) is False
    assert [(f.op, type(f.error)) for f in failures] == [
        ("read", RedisConnectionError),
        ("call", ResponseError),
        ("call", OSError),
    ]


async def test_the_budget_bounds_a_call_and_a_call_may_bring_its_own():
    failures: list[Failure] = []
    guard = RedisGuard("test redis", timeout_s=0.01, on_failure=failures.append)
    assert await guard.call(lambda: answer(delay_s=1.0), default="late") == "late"
    assert isinstance(failures[-1].error, TimeoutError)
    assert await guard.call(lambda: answer(delay_s=0.05), timeout_s=1.0) == "ok"
    # only the client's socket timeout
    assert await RedisGuard("test redis").call(lambda: answer(delay_s=0.05)) == "ok"


async def test_errors_outside_catch_propagate_and_error_maps_the_rest():
    class Full(errors.ResourceExhausted):
        pass

    guard = RedisGuard(
        "test redis",
        catch=(RedisConnectionError,),
        error=lambda cause: Full(f"full: {cause}"),
    )
    with pytest.raises(ResponseError):
        await guard.call(lambda: fail(ResponseError("a bug in a script")))
    with pytest.raises(Full, match="full: down"):
        await guard.call(lambda: fail(RedisConnectionError("down")))


async def test_the_breaker_skips_redis_after_failures_that_are_not_timeouts():
    failures: list[Failure] = []
    breaker = Breaker(failures=2, open_s=60.0)
    guard = RedisGuard("test redis", breaker=breaker, on_failure=failures.append)
    calls = 0

    async def refused() -> object:
        nonlocal calls
        calls += 1
        raise RedisConnectionError("refused")

    for _ in range(3):  # timeouts do not count towards the breaker
        await guard.call(lambda: fail(RedisTimeoutError("slow")), default=None)
    assert not breaker.is_open()
    await guard.call(refused, default=None)
    assert not breaker.is_open()
    await guard.call(refused, default=None)
    assert breaker.is_open() and breaker.tripped and failures[-1].opened
    # open: skipped at once, reported without an error
    assert await guard.call(refused, op="read", default="miss") == "miss"
    with pytest.raises(CacheUnavailable, match="breaker is open"):
        await guard.call(refused)
    assert calls == 2
    assert failures[-1] == Failure("call", None) and failures[-2] == Failure("read", None)


async def test_a_success_closes_the_breaker_and_a_zero_breaker_never_opens():
    breaker = Breaker(failures=1, open_s=0.01)
    guard = RedisGuard("test redis", breaker=breaker)
    await guard.call(lambda: fail(RedisConnectionError("x")), default=None)
    assert breaker.is_open()
    await asyncio.sleep(0.02)
    assert not breaker.is_open() and breaker.tripped  # tripped until a call succeeds
    assert await guard.call(lambda: answer(1)) == 1
    assert not breaker.tripped
    never = Breaker(failures=1, open_s=0.0)
    guard = RedisGuard("test redis", breaker=never)
    for _ in range(3):
        await guard.call(lambda: fail(RedisConnectionError("x")), default=None)
    assert not never.is_open() and not never.tripped


class _Concurrency:
    """Calls that take 10 ms each; `peak`: the most that ran at once."""

    def __init__(self) -> None:
        self.running = self.peak = 0

    async def one(self) -> object:
        self.running += 1
        self.peak = max(self.peak, self.running)
        await asyncio.sleep(0.01)
        self.running -= 1
        return "ok"


async def test_max_in_flight_bounds_concurrent_calls_within_their_budget():
    guard = RedisGuard("test redis", timeout_s=1.0, max_in_flight=2)
    calls = _Concurrency()
    assert await asyncio.gather(*(guard.call(calls.one) for _ in range(6))) == ["ok"] * 6
    assert calls.peak == 2
    # waiting for a slot counts against the budget
    hold = asyncio.Event()
    blockers = [asyncio.ensure_future(guard.call(hold.wait)) for _ in range(2)]
    await asyncio.sleep(0)
    assert await guard.call(lambda: answer(), timeout_s=0.02, default="no slot") == "no slot"
    hold.set()
    await asyncio.gather(*blockers)


async def test_by_default_a_guard_stays_below_the_pool():
    """redis-py's pool fails a command past its size instead of waiting (200
    WatchTop streams opening at once failed UNAVAILABLE): a guard holds the
    rest back unless told otherwise."""
    guard = RedisGuard("test redis")
    calls = _Concurrency()
    many = 3 * rediskit.POOL_SIZE
    assert await asyncio.gather(*(guard.call(calls.one) for _ in range(many))) == ["ok"] * many
    assert calls.peak == rediskit.GUARD_IN_FLIGHT < rediskit.POOL_SIZE


async def test_a_cancelled_call_is_cancelled_not_a_failure():
    failures: list[Failure] = []
    guard = RedisGuard("test redis", on_failure=failures.append)
    started = asyncio.Event()

    async def cancelled_mid_call() -> object:
        started.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError as exc:  # as a client may turn a cancel into an error
            raise RedisConnectionError("closed while cancelling") from exc
        return "never"

    task = asyncio.ensure_future(guard.call(cancelled_mid_call, default="open"))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert failures == []
