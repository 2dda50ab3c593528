"""Scan's flow rules in process, in milliseconds: repeats, reused keys, the
rate limit's answer, Redis failing open and peers that cannot answer, through
the real `ScanFlow` with in-process fakes of what it talks to (geo's and
score's Protocols, and stand-ins of the scan log and the scan Redis that keep
their contracts in dicts). The stores themselves are tested against real
Postgres and Redis in tests/integration; the e2e tests prove it all with the
real services."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from libs import errors
from libs.admission import LimitSettings
from libs.deadlines import Budget
from libs.metrics import Metrics
from services.scan.cache import Admission, decode, encode_answer
from services.scan.model import Answer, Position, ScanInput, ScanRecord, Status
from services.scan.service import FlowSettings, KeyReused, Overloaded, RateLimited, ScanFlow
from tests.support.scan_doubles import FakeScore, passing_check_in

NOW = datetime.now(UTC)


def scan(client_scan_id: str = "c1", tag: str = "t1", hunt: str = "h1") -> ScanInput:
    return ScanInput("p1", hunt, tag, 38.7139, -9.1394, 5.0, NOW, client_scan_id)


class FakeGeo:
    def __init__(self, fail: errors.ServiceError | None = None) -> None:
        self.fail = fail
        self.calls = 0

    async def check_in(self, **request):
        self.calls += 1
        await asyncio.sleep(0)
        if self.fail is not None:
            raise self.fail
        return passing_check_in(request["at"])


class MemoryLog:
    """The scan log's contract (services/scan/store.py) in a dict: unique
    key, conditional apply, leases."""

    def __init__(self) -> None:
        self.rows: dict[str, ScanRecord] = {}
        self.postponed: list[str] = []
        self._n = 0

    async def insert(self, scan_id, scan: ScanInput, lease, traceparent):
        await asyncio.sleep(0)
        if any(r.input.key == scan.key for r in self.rows.values()):
            return None
        self._n += 1
        scan_id = f"s{self._n}"
        record = ScanRecord(scan_id, scan, NOW, Answer(scan_id, Status.RECEIVED), 1, None)
        self.rows[scan_id] = record
        return record, None

    async def get_by_key(self, player_id, hunt_id, client_scan_id):
        return next(
            (r for r in self.rows.values() if r.input.key == (player_id, hunt_id, client_scan_id)),
            None,
        )

    async def apply(self, answer: Answer, hunt_ends_at=None):
        row = self.rows[answer.scan_id]
        if row.answer.status is Status.RECEIVED:
            row = dataclasses.replace(row, answer=answer, applied_at=NOW)
            self.rows[answer.scan_id] = row
        return row

    async def postpone(self, scan_id, delay, error):
        self.postponed.append(scan_id)

    async def claim(self, scan_id, lease):
        return None  # the first driver still holds its lease

    async def previous_position(self, player_id, before_scan_id) -> Position | None:
        return None


class MemoryRedis:
    """The scan Redis's contract (services/scan/cache.py) in a dict; `down`
    makes every call fail as a lost connection; `limited` answers the rate
    limit's refusal."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str, str], str] = {}
        self.down = False
        self.limited = False

    def _check(self) -> None:
        if self.down:
            raise RedisConnectionError("scan redis is down")

    async def admit(self, scan: ScanInput) -> Admission:
        self._check()
        if self.limited:
            return Admission(seen=False, answer=None, retry_after_ms=1500, last=None)
        raw = self.values.get(scan.key)
        if raw is not None:
            answer, fingerprint = decode(raw)
            return Admission(True, answer, None, None, fingerprint)
        self.values[scan.key] = f"pending:{scan.fingerprint()}"
        return Admission(seen=False, answer=None, retry_after_ms=None, last=None)

    async def finish(self, scan: ScanInput, answer, position) -> None:
        self._check()
        if answer is not None:
            self.values[scan.key] = encode_answer(answer, scan.fingerprint())

    async def pending(self, scan: ScanInput) -> bool:
        self._check()
        return scan.key in self.values

    async def forget(self, scan: ScanInput) -> bool:
        self._check()
        if self.values.get(scan.key) == f"pending:{scan.fingerprint()}":
            del self.values[scan.key]
            return True
        return False


class Flow:
    def __init__(self, geo: FakeGeo | None = None, admission: LimitSettings | None = None) -> None:
        self.log, self.redis = MemoryLog(), MemoryRedis()
        self.geo, self.score = geo or FakeGeo(), FakeScore()
        self.flow = ScanFlow(
            self.log,  # type: ignore[arg-type]
            self.redis,  # type: ignore[arg-type]
            self.geo,
            self.score,
            Metrics("scan"),
            FlowSettings(wait_s=1.0, admission=admission or LimitSettings()),
        )

    async def submit(self, request: ScanInput) -> Answer:
        answer = await self.flow.submit(request, Budget.within(5.0))
        await asyncio.sleep(0.01)  # the answer is written to Redis after the reply
        return answer


def run(test):
    return asyncio.run(test())


def test_a_repeat_gets_the_first_answer_and_unlocks_nothing_more():
    async def test():
        f = Flow()
        first = await f.submit(scan())
        assert first.status is Status.APPLIED and first.points_awarded == 15
        assert await f.submit(scan()) == first  # from the Redis answer
        f.redis.values.clear()  # Redis lost it: the log's unique key decides
        assert await f.submit(scan()) == first
        assert len(f.score.calls) == 1 and len(f.log.rows) == 1

    run(test)


def test_concurrent_copies_share_one_processing():
    async def test():
        f = Flow()
        answers = await asyncio.gather(*(f.submit(scan()) for _ in range(20)))
        assert len({a.scan_id for a in answers}) == 1
        assert (f.geo.calls, len(f.score.calls), len(f.log.rows)) == (1, 1, 1)

    run(test)


def test_a_reused_key_is_refused_at_every_layer_and_records_nothing():
    async def test():
        f = Flow()
        first = await f.submit(scan())
        other = scan(tag="t2")
        for lose_redis in (False, True):
            if lose_redis:
                f.redis.values.clear()
            with pytest.raises(KeyReused) as refused:
                await f.submit(other)
            assert refused.value.metadata == {"scan_id": first.scan_id}
            assert refused.value.reason == "IDEMPOTENCY_KEY_REUSED"
        assert len(f.log.rows) == 1 and len(f.score.calls) == 1
        # The refused copy dropped its own pending mark, so the exact repeat
        # that follows is answered, not kept waiting.
        assert await f.submit(scan()) == first
        # The same key in another hunt is another scan.
        elsewhere = await f.submit(scan(hunt="h2"))
        assert elsewhere.scan_id != first.scan_id and len(f.log.rows) == 2

    run(test)


def test_a_differing_copy_in_flight_waits_and_is_refused_while_exact_ones_share():
    async def test():
        f = Flow()
        results = await asyncio.gather(
            f.submit(scan()), f.submit(scan(tag="t2")), f.submit(scan()),
            return_exceptions=True,
        )  # fmt: skip
        first, differing, repeat = results
        assert isinstance(first, Answer) and repeat == first
        assert isinstance(differing, KeyReused)
        assert differing.metadata == {"scan_id": first.scan_id}
        assert len(f.log.rows) == 1

    run(test)


def test_a_player_over_the_rate_limit_is_told_when_to_retry_and_nothing_is_recorded():
    async def test():
        f = Flow()
        f.redis.limited = True
        with pytest.raises(RateLimited) as refused:
            await f.submit(scan())
        assert refused.value.retry_after_s == 1.5
        assert f.log.rows == {} and f.geo.calls == 0

    run(test)


def test_without_redis_the_flow_fails_open_and_stays_idempotent():
    async def test():
        f = Flow()
        f.redis.down = True
        first = await f.submit(scan())
        assert first.status is Status.APPLIED
        assert await f.submit(scan()) == first  # decided by the log's unique key
        with pytest.raises(KeyReused):
            await f.submit(scan(tag="t2"))
        assert len(f.log.rows) == 1 and len(f.score.calls) == 1

    run(test)


def test_a_peer_that_cannot_answer_leaves_the_scan_received_for_the_redrive():
    async def test():
        f = Flow(FakeGeo(fail=errors.Unavailable("geo is down")))
        answer = await f.submit(scan())
        assert answer.status is Status.RECEIVED and answer.outcome is None
        assert f.log.postponed == [answer.scan_id] and f.score.calls == []

    run(test)


def test_an_old_retry_is_answered_and_an_old_new_scan_refused():
    async def test():
        f = Flow()
        first = await f.submit(scan())
        too_old = errors.InvalidArgument("scanned_at", "is older than 600s")
        assert await f.flow.replay(scan(), too_old) == first
        with pytest.raises(KeyReused):
            await f.flow.replay(scan(tag="t2"), too_old)
        with pytest.raises(errors.InvalidArgument):
            await f.flow.replay(scan("c2"), too_old)

    run(test)


def test_past_the_admission_limit_a_new_scan_is_refused_with_a_hint_and_a_copy_joins():
    async def test():
        f = Flow(HeldGeo(), LimitSettings(min_limit=1, initial=1, max_limit=1))
        first = asyncio.ensure_future(f.submit(scan("c1")))
        await asyncio.sleep(0.01)  # recorded, waiting on geo
        with pytest.raises(Overloaded) as refused:
            await f.flow.submit(scan("c2"), Budget.within(5.0))
        assert 0 < refused.value.retry_after_s <= 1
        copy = asyncio.ensure_future(f.flow.submit(scan("c1"), Budget.within(5.0)))
        f.geo.release.set()
        assert (await copy) == (await first)
        assert [r.input.client_scan_id for r in f.log.rows.values()] == ["c1"]
        assert (await f.submit(scan("c2"))).status is Status.APPLIED  # the place is free again

    run(test)


def test_a_deadline_shorter_than_the_fastest_scan_is_refused_before_any_work():
    async def test():
        f = Flow()
        await f.submit(scan("c1"))  # the fastest scan so far: the baseline
        with pytest.raises(errors.DeadlineExceeded):
            await f.flow.submit(scan("c2"), Budget.within(0.0))
        assert len(f.log.rows) == 1 and f.geo.calls == 1

    run(test)


class HeldGeo(FakeGeo):
    """Geo that answers once `release` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def check_in(self, **request):
        await self.release.wait()
        return await super().check_in(**request)
