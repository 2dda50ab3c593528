import asyncio

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from libs import paging, validate
from libs.auth import Authenticator, Role
from libs.cache import MISSING, SingleFlight, TtlCache
from libs.config import Tokens
from libs.deadlines import Budget
from libs.errors import InvalidArgument


def test_ttl_cache_bounds_entries_and_time():
    now = [0.0]
    cache = TtlCache(max_entries=2, ttl_s=5, clock=lambda: now[0])
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # a is now most recent
    cache.put("c", 3)
    assert cache.get("b") is MISSING and len(cache) == 2
    now[0] = 5.0
    assert cache.get("a") is MISSING and cache.get("c") is MISSING


async def test_single_flight_shares_one_load():
    calls = 0
    gate = asyncio.Event()

    async def load():
        nonlocal calls
        calls += 1
        await gate.wait()
        return "v"

    flight: SingleFlight[str, str] = SingleFlight()
    waiters = [asyncio.create_task(flight.do("k", load)) for _ in range(50)]
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*waiters) == ["v"] * 50
    assert calls == 1 and len(flight) == 0


async def test_single_flight_survives_a_cancelled_caller_and_shares_errors():
    gate = asyncio.Event()

    async def load():
        await gate.wait()
        raise RuntimeError("boom")

    flight: SingleFlight[str, str] = SingleFlight()
    first = asyncio.create_task(flight.do("k", load))
    second = asyncio.create_task(flight.do("k", load))
    await asyncio.sleep(0)
    first.cancel()
    gate.set()
    with pytest.raises(RuntimeError):
        await second


@pytest.mark.parametrize("value", ["p42", "h-7.x_y", "A" * 64, "0"])
def test_ids_that_pass(value):
    assert validate.require_id("player_id", value) == value


@pytest.mark.parametrize("value", ["", "{p}", "a:b", "a b", "a\nb", "A" * 65, "-a", "é"])
def test_ids_that_fail_name_the_field(value):
    with pytest.raises(InvalidArgument) as err:
        validate.require_id("player_id", value)
    assert err.value.field == "player_id"


def test_time_bounds():
    from datetime import UTC, datetime, timedelta

    now = datetime(2026, 1, 1, tzinfo=UTC)
    ts = Timestamp()
    ts.FromDatetime(now + timedelta(seconds=31))
    with pytest.raises(InvalidArgument, match="future"):
        validate.require_time("scanned_at", ts, True, now=now, max_ahead=timedelta(seconds=30))
    with pytest.raises(InvalidArgument, match="required"):
        validate.require_time("scanned_at", Timestamp(), False)


def test_page_tokens_round_trip_and_reject_garbage():
    token = paging.encode({"after": "p9", "score": 3})
    assert paging.decode(token, keys=("after",))["after"] == "p9"
    assert paging.decode("") is None
    for bad in ("!!!", "e30", "x" * 2000, paging.encode({"other": 1})):
        with pytest.raises(InvalidArgument):
            paging.decode(bad, keys=("after",))


def test_authenticator_maps_tokens_to_roles():
    auth = Authenticator(Tokens(client=("c1",), service=("s1",), admin=("a1",)))
    assert auth.role_of("Bearer c1") is Role.CLIENT
    assert auth.role_of("bearer s1") is Role.SERVICE
    assert auth.role_of("Bearer a1") is Role.ADMIN
    assert auth.role_of("Bearer nope") is None
    assert auth.role_of("c1") is None
    assert auth.role_of(None) is None
    assert Authenticator(Tokens()).role_of("Bearer ") is None


def test_budget_shortens_a_step_to_what_the_deadline_leaves():
    assert Budget().timeout(2.0) == 2.0  # no deadline: the step's own
    assert not Budget().expired()
    roomy = Budget.within(10.0)
    assert roomy.timeout(2.0) == 2.0
    tight = Budget.within(0.5)
    assert 0.45 < tight.timeout(2.0, margin_s=0.01) <= 0.49
    late = Budget.within(-1.0)
    assert late.expired()
    assert late.timeout(2.0) == 0.001  # never below 1 ms
