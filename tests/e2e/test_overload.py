"""Load shedding: past the admission limit (here held at 3: SCAN_MAX_IN_FLIGHT
caps it), a new scan is refused at once with UNAVAILABLE and a retry hint,
and nothing of it is written; copies of a scan in flight still join it, and
the refused scan goes through once the load is gone. The stack is held busy
by stopping geo (SIGSTOP): each scan then waits for its CheckIn."""

from __future__ import annotations

import asyncio
import os
import signal
from datetime import UTC, datetime

import asyncpg
import grpc
from google.rpc import error_details_pb2, status_pb2

from tests.support.hunts import create_hunt, spots
from tests.support.polling import eventually
from tests.support.scans import request, unique
from tests.support.services import scrape_metrics
from tests.support.stack import CLIENT, Stack
from treasure.scan.v1 import scan_pb2

# The held scans wait on geo for up to 30 s: well past the 10 s the test may take.
STACK_ENV = {"SCAN_MAX_IN_FLIGHT": "3", "SCAN_GEO_TIMEOUT_S": "30"}


def _details(err: grpc.aio.AioRpcError) -> tuple[str, float]:
    """(ErrorInfo reason, RetryInfo delay in seconds) of an error."""
    status = status_pb2.Status.FromString(dict(err.trailing_metadata())["grpc-status-details-bin"])
    info, retry = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
    assert any(d.Unpack(info) for d in status.details)
    assert any(d.Unpack(retry) for d in status.details)
    return info.reason, retry.retry_delay.ToTimedelta().total_seconds()


async def _rows(db: asyncpg.Pool, players: list[str]) -> int:
    return await db.fetchval(
        "SELECT count(*) FROM scan.scans WHERE player_id = ANY($1::text[])", players
    )


async def test_past_max_in_flight_a_new_scan_is_shed_and_a_copy_still_joins(
    stack: Stack, db: asyncpg.Pool
):
    hunt_id = unique("busy")
    cps = spots(hunt_id, 4)
    await create_hunt(stack.geo(), hunt_id, cps)
    scan = stack.scan()
    now = datetime.now(UTC)
    warm = await scan.SubmitScan(request(unique("warm"), hunt_id, cps[3], at=now), metadata=CLIENT)
    assert warm.outcome == scan_pb2.SCAN_OUTCOME_UNLOCKED

    players = [unique("held") for _ in range(3)]
    held_requests = [request(p, hunt_id, cps[i], at=now) for i, p in enumerate(players)]
    late = request(unique("late"), hunt_id, cps[0], at=now)
    geo = stack.pids()["geo"]
    os.kill(geo, signal.SIGSTOP)
    try:
        held = [
            asyncio.ensure_future(scan.SubmitScan(r, metadata=CLIENT, timeout=60))
            for r in held_requests
        ]
        await eventually(  # all three recorded, each waiting on geo
            lambda: _rows(db, players),
            until=lambda rows: rows == 3,
            timeout_s=10,
            what="the three held scans to be recorded",
        )
        try:
            await scan.SubmitScan(late, metadata=CLIENT, timeout=2)
            raise AssertionError("a fourth scan in flight was accepted")
        except grpc.aio.AioRpcError as err:
            assert err.code() == grpc.StatusCode.UNAVAILABLE
            reason, delay = _details(err)
            assert reason == "SCAN_OVERLOADED"
            assert 0 < delay <= 1
        assert await _rows(db, [late.player_id]) == 0  # nothing of it was written
        copy = asyncio.ensure_future(scan.SubmitScan(held_requests[0], metadata=CLIENT, timeout=60))
        await asyncio.sleep(0.2)
        assert not copy.done()  # joined the scan in flight, not shed
    finally:
        os.kill(geo, signal.SIGCONT)

    answers = await asyncio.gather(*held)
    assert all(a.status == scan_pb2.SCAN_STATUS_APPLIED for a in answers)
    assert all(a.outcome == scan_pb2.SCAN_OUTCOME_UNLOCKED for a in answers)
    assert (await copy).scan_id == answers[0].scan_id
    retried = await scan.SubmitScan(late, metadata=CLIENT)
    assert retried.outcome == scan_pb2.SCAN_OUTCOME_UNLOCKED
    metrics = await asyncio.to_thread(scrape_metrics, stack.metrics_ports["scan"])
    assert metrics['scans_shed_total{reason="limit"}'] >= 1
