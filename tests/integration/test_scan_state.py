"""The scan service's state layer on real Redis and Postgres: the admission
script (idempotency, token bucket, last position) and the scan log."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from libs import pg, rediskit
from services.scan.cache import ScanCache
from services.scan.model import Answer, Outcome, Position, ScanInput, Status, new_scan_id
from services.scan.store import ScanStore
from tests.support.worklog import work_done

NOW = datetime.now(UTC).replace(microsecond=0)


def scan(
    client_scan_id: str = "c1", player: str = "p1", hunt: str = "h1", tag: str = "t1"
) -> ScanInput:
    return ScanInput(player, hunt, tag, 38.7, -9.1, 5.0, NOW, client_scan_id)


@pytest.fixture
async def cache(redis_urls):
    client = rediskit.connect(redis_urls["scan"])
    yield ScanCache(client, rate_limit=3, rate_window_s=10, pending_ttl_s=5, answer_ttl_s=60)
    await client.aclose()


@pytest.fixture(params=[1, 32], ids=["one-by-one", "batched"])
async def store(pg_dsn, request):
    """The scan log with each statement alone, and with natural batching."""
    pool = await pg.create_pool(pg_dsn)
    yield ScanStore(pool, batch_size=request.param)
    await pool.close()


async def test_admission_takes_tokens_then_refuses_with_a_delay(cache):
    admitted = [await cache.admit(scan(f"c{i}")) for i in range(3)]
    assert all(not a.seen and a.retry_after_ms is None for a in admitted)
    refused = await cache.admit(scan("c9", hunt="h2"))  # one bucket per player, all hunts
    assert refused.retry_after_ms is not None and 0 < refused.retry_after_ms <= 10_000
    assert (await cache.admit(scan("c1", "p2"))).retry_after_ms is None  # buckets are per player


async def test_a_seen_copy_costs_no_token_and_gets_the_answer(cache):
    await cache.admit(scan())
    pending = await cache.admit(scan())
    assert pending.seen and pending.answer is None
    assert pending.fingerprint == scan().fingerprint()  # the pending copy's request
    answer = Answer("s1", Status.APPLIED, Outcome.UNLOCKED, 10, 10, "cp", "Tower", True)
    await cache.finish(scan(), answer, Position(38.7, -9.1, 5.0, NOW))
    for _ in range(5):
        again = await cache.admit(scan())
        assert again.seen and again.answer == answer
        assert again.fingerprint == scan().fingerprint()
    assert again.last == Position(38.7, -9.1, 5.0, NOW)
    # The same key with another tag sees the first request's fingerprint; in
    # another hunt it is another key.
    reused = await cache.admit(scan(tag="t2"))
    assert reused.seen and reused.fingerprint != scan(tag="t2").fingerprint()
    other_hunt = await cache.admit(scan(hunt="h2"))
    assert not other_hunt.seen and other_hunt.retry_after_ms is None  # 2 of 3 tokens used


async def test_a_copy_that_gives_up_drops_only_its_own_mark(cache):
    await cache.admit(scan())  # marks pending:<fingerprint of scan()>
    assert not await cache.forget(scan(tag="t2"))  # another request's mark stays
    assert (await cache.admit(scan())).seen
    assert await cache.forget(scan())
    assert not (await cache.admit(scan())).seen  # gone: the next copy is the first
    answer = Answer("s1", Status.APPLIED, Outcome.UNLOCKED, 10, 10, "cp", "Tower", True)
    await cache.finish(scan(), answer, None)
    assert not await cache.forget(scan())  # an answer is never dropped
    assert (await cache.admit(scan())).answer == answer


async def test_insert_is_unique_per_player_hunt_and_client_scan_id(store):
    first, previous = await store.insert(new_scan_id(), scan(), timedelta(seconds=10), "")
    assert first.answer.status is Status.RECEIVED and previous is None
    assert await store.insert(new_scan_id(), scan(), timedelta(seconds=10), "") is None
    assert await store.insert(new_scan_id(), scan(tag="t2"), timedelta(seconds=10), "") is None
    assert (await store.get_by_key("p1", "h1", "c1")).scan_id == first.scan_id
    # The same client_scan_id in another hunt is another scan.
    other, _ = await store.insert(new_scan_id(), scan(hunt="h2"), timedelta(seconds=10), "")
    assert other.scan_id != first.scan_id
    assert (await store.get_by_key("p1", "h2", "c1")).scan_id == other.scan_id
    assert await store.get_by_key("p1", "h3", "c1") is None


async def test_apply_is_once_and_the_first_answer_wins(store):
    record, _ = await store.insert(new_scan_id(), scan(), timedelta(seconds=10), "")
    one = Answer(record.scan_id, Status.APPLIED, Outcome.UNLOCKED, 10, 10, "cp", "Tower", False)
    two = Answer(
        record.scan_id, Status.APPLIED, Outcome.ALREADY_UNLOCKED, 0, 10, "cp", "Tower", False
    )
    results = await asyncio.gather(store.apply(one), store.apply(two))
    # Both drivers get the answer that won, and it is the one stored.
    assert results[0].answer == results[1].answer
    assert results[0].answer in (one, two)
    assert (await store.get(record.scan_id)).answer == results[0].answer


async def test_relay_claims_only_due_scans_and_replicas_never_share_one(store, pg_dsn):
    for i in range(20):
        await store.insert(new_scan_id(), scan(f"c{i}"), timedelta(seconds=0), "")
    await store.insert(new_scan_id(), scan("later"), timedelta(seconds=60), "")
    first, second = await asyncio.gather(
        store.claim_due(15, timedelta(seconds=30)), store.claim_due(15, timedelta(seconds=30))
    )
    ids = [r.scan_id for r in first + second]
    assert len(ids) == len(set(ids)) == 20
    assert await store.claim_due(50, timedelta(seconds=30)) == []  # leased now
    # Counted in Postgres with the claims: two runs, each scan once (an empty claim is no run).
    db = await asyncpg.connect(pg_dsn)
    try:
        assert await work_done(db, "scan", "redrive") == (2, 20)
    finally:
        await db.close()
    assert (await store.backlog()).received == 21


async def test_list_player_pages_newest_first(store):
    ids = [
        (await store.insert(new_scan_id(), scan(f"c{i}"), timedelta(0), ""))[0].scan_id
        for i in range(5)
    ]
    page = await store.list_player("p1", "", "", 3)
    assert [r.scan_id for r in page] == ids[::-1][:3]
    rest = await store.list_player("p1", "h1", page[-1].scan_id, 3)
    assert [r.scan_id for r in rest] == ids[::-1][3:]
    assert await store.list_player("p1", "other-hunt", "", 3) == []


async def test_insert_returns_the_last_plausible_position(store):
    from services.scan.model import Outcome

    first, _ = await store.insert(new_scan_id(), scan("c1"), timedelta(0), "")
    await store.apply(Answer(first.scan_id, Status.APPLIED, Outcome.UNLOCKED))
    cheat, previous = await store.insert(new_scan_id(), scan("c2"), timedelta(0), "")
    assert previous == Position(38.7, -9.1, 5.0, NOW)
    await store.apply(Answer(cheat.scan_id, Status.APPLIED, Outcome.IMPLAUSIBLE_SPEED))
    _, previous = await store.insert(new_scan_id(), scan("c3"), timedelta(0), "")
    assert previous == Position(
        38.7, -9.1, 5.0, NOW
    )  # a rejected teleport does not move the player


async def test_a_batch_of_new_scans_and_answers_gets_each_its_own_result(pg_dsn):
    """Scans recorded and applied together (one statement each way): each
    caller gets its own row, an existing key gets None, every new scan of a
    player sees the position from before the batch, and an answer for a scan
    applied already gets the first answer."""
    pool = await pg.create_pool(pg_dsn)
    store = ScanStore(pool, batch_size=32)
    try:
        lease = timedelta(seconds=10)
        seen, _ = await store.insert(new_scan_id(), scan("c0"), lease, "")
        await store.apply(Answer(seen.scan_id, Status.APPLIED, Outcome.UNLOCKED, 5, 5, "cp0"))
        fresh = [scan(f"c{i}", player="p1" if i < 3 else f"q{i}") for i in range(1, 6)]
        inserted = await asyncio.gather(
            *(store.insert(new_scan_id(), s, lease, f"tp-{s.client_scan_id}") for s in fresh),
            store.insert(new_scan_id(), scan("c0"), lease, ""),  # its key exists
        )
        assert inserted[-1] is None
        assert store.batching() == {"insert": (2, 7), "apply": (1, 1)}  # the 6 went together
        for request, (record, previous) in zip(fresh, inserted[:-1], strict=True):
            assert record.input == request and record.traceparent == f"tp-{request.client_scan_id}"
            assert record.answer.status is Status.RECEIVED
            assert previous == (
                Position(38.7, -9.1, 5.0, NOW) if request.player_id == "p1" else None
            )
        answers = [
            Answer(r.scan_id, Status.APPLIED, Outcome.OUT_OF_RANGE, 0, i) for i, (r, _) in
            enumerate(inserted[:-1])
        ]  # fmt: skip
        late = Answer(seen.scan_id, Status.APPLIED, Outcome.UNKNOWN_TAG)
        applied = await asyncio.gather(*(store.apply(a) for a in answers), store.apply(late))
        assert [r.answer for r in applied[:-1]] == answers
        assert applied[-1].answer.outcome is Outcome.UNLOCKED  # the first answer won
        assert store.batching()["apply"] == (2, 7)
        for a in answers:
            assert (await store.get(a.scan_id)).answer == a
    finally:
        await pool.close()
