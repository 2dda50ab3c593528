"""The fault suite (issue 9): real processes, a steady load of scans from the
test (tests/support/faults.py), one fault at a time, healed by the test; then
no acknowledged scan is lost, none is awarded twice, every scan came out
UNLOCKED, the invariant checker (tools/verify.py) passes, the leaderboard and
score's GetScore equal score's totals in Postgres, the leaderboard within 5 s
of the heal, and no service needed a restart: every process but the one the
fault replaced keeps its pid and is SERVING, and a Redis that came back empty
is written again.

One stack serves the module (a fresh hunt per fault); the Postgres restart
gets a stack on a Postgres cluster of its own, so no server the suite did not
start is ever restarted. Filling a Redis lowers its maxmemory to 16 MB first
(CONFIG SET; the configs say 256mb, restored afterwards) so the fill takes
well under a second, and junk keeps coming while the load goes on, so the
Redis stays full. Per fault a row goes to the table printed at the end of the
session and written to .run/test/faults.md. Select with `-m faults`.

One case kills score while the scans come at twice the rate the stack
answered a moment before (measured on a hunt of its own): the admission
limit refuses the excess and the clients retry it with the same
client_scan_id, so scans keep arriving after the heal; its board promise
counts from the last scan answered.

The stack runs with the settings of the other e2e tests (a scan relay interval
of 0.2 s, a lease of 3 s, a rate limit the load cannot reach); everything else,
the outbox relay's backoff included, is the services' default.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import asyncpg
import pytest

from tests.support import faults
from tests.support.faults import ScanLoad, account, board_converged, wait_drained
from tests.support.hunts import create_hunt, spots
from tests.support.infra import RUN_DIR
from tests.support.polling import eventually
from tests.support.services import scrape_metrics
from tests.support.stack import CLIENT, Stack
from tests.support.worklog import units_by_worker, work_done
from tools.localinfra import PrivatePostgres, create_database, free_port, throwaway_database
from tools.verify import verify
from treasure.leaderboard.v1 import leaderboard_pb2_grpc
from treasure.scan.v1 import scan_pb2

# Every wait below is bounded; the sum of the bounds stays under this, so a
# broken promise fails with its message, not with a timeout.
pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]
RUN_TIMEOUT_S = 240.0

STACK_ENV = {
    "SCAN_RATE_LIMIT": "1000",
    "SCAN_RELAY_INTERVAL_S": "0.2",
    "SCAN_LEASE_S": "3",
}
RATE = 40.0  # scans per second, offered
WARMUP_S = 1.0  # load before the fault
AFTER_S = 1.0  # load after the heal
DOWN_S = 1.0  # how long a killed service, a stopped Redis or Postgres stays down
LEADERBOARD_DOWN_S = 30.0
CONVERGE_S = 5.0  # the promise: the board equals Postgres this soon after the heal
REPLICA_DOWN_S = 3.0  # how long one of two replicas stays dead
#: A lost replica may cost the scans it held: at most this many seconds' worth
#: of the load are retried or deferred (alone, a dead service costs all of them).
CONTAINED = 0.25
FILL_MAXMEMORY = 16 * 1024 * 1024  # CONFIG SET for the fill (the configs say 256mb)
TABLE_PATH = RUN_DIR / "faults.md"


@dataclass(frozen=True)
class Fault:
    """A fault and its heal: `inject` returns once the fault has healed, with
    notes for the table. `restarts`: the service whose process the fault
    replaces (its pid changes; every other pid must not). `shows`: how the
    clients must have felt it ("retried": calls failed and were sent again;
    "deferred": scans acknowledged as recorded, applied later), proof that the
    fault hit the load; "contained": hardly (a replica lost, the other one
    serving: at most the scans in flight on it were retried or deferred). `empties`: the Redis the fault emptied, which the
    service must be writing again afterwards (it reconnected by itself)."""

    id: str
    name: str
    inject: Callable[[Stack], Awaitable[dict]]
    seconds: float = DOWN_S + 3.0  # how long the fault lasts, about (to size the load)
    restarts: str | None = None
    shows: str | None = None
    empties: str | None = None
    #: The Redis the fault fills to maxmemory (and keeps full while the load goes on).
    fills: str | None = None
    #: Offered load as a multiple of the stack's measured rate (None: RATE).
    overload_x: float | None = None


def kill_service(name: str) -> Fault:
    async def inject(stack: Stack) -> dict:
        stack.kill(name)  # SIGKILL, mid-flight
        await asyncio.sleep(DOWN_S)
        await stack.restart(name)  # what a supervisor (systemd, k8s) does
        return {}

    # A dead scan fails the client's calls; a dead geo or score leaves scans
    # recorded and deferred; a dead leaderboard only delays the board.
    shows = {"scan": "retried", "score": "deferred", "geo": "deferred"}.get(name)
    return Fault(f"kill-{name}", f"kill -9 {name}, restart", inject, restarts=name, shows=shows)


def restart_redis(name: str) -> Fault:
    async def inject(stack: Stack) -> dict:
        await stack.stop_redis(name)
        await asyncio.sleep(DOWN_S)
        await stack.start_redis(name)  # same port, same config, empty
        return {}

    return Fault(
        f"redis-restart-{name}",
        f"{name} Redis stopped {DOWN_S:g} s, restarted",
        inject,
        empties=name,
    )


def flush_redis(name: str) -> Fault:
    async def inject(stack: Stack) -> dict:
        await stack.flushall(name)
        return {}

    return Fault(f"flushall-{name}", f"{name} Redis FLUSHALL", inject, seconds=1.0, empties=name)


def fill_redis(name: str) -> Fault:
    async def inject(stack: Stack) -> dict:
        return {"fill": await stack.fill_redis(name, maxmemory=FILL_MAXMEMORY)}

    return Fault(
        f"fill-{name}", f"{name} Redis filled to maxmemory (LRU)", inject, seconds=2.0, fills=name
    )


def leaderboard_down() -> Fault:
    async def inject(stack: Stack) -> dict:
        await stack.stop_service("leaderboard")
        await asyncio.sleep(LEADERBOARD_DOWN_S)
        await stack.restart("leaderboard")
        return {}

    return Fault(
        "leaderboard-down",
        f"leaderboard down {LEADERBOARD_DOWN_S:g} s",
        inject,
        seconds=LEADERBOARD_DOWN_S + 3.0,
        restarts="leaderboard",
    )


SERVICES = ("scan", "score", "leaderboard", "geo")


def kill_score_past_capacity() -> Fault:
    """kill -9 of score while scans come at twice what the stack answers:
    admission refuses the excess, the clients retry it, and still nothing is
    lost or awarded twice."""
    fault = kill_service("score")
    return Fault("kill-score-2x", "kill -9 score at 2x capacity", fault.inject,
                 restarts="score", shows="retried", overload_x=2.0)  # fmt: skip


FAULTS = [
    *(kill_service(name) for name in SERVICES),
    kill_score_past_capacity(),
    *(restart_redis(name) for name in SERVICES),
    *(flush_redis(name) for name in SERVICES),
    *(fill_redis(name) for name in ("score", "geo")),
    leaderboard_down(),
]


async def run_fault(stack: Stack, db: asyncpg.Pool, dsn: str, fault: Fault) -> list[str]:
    """Load, fault, heal, stop the load, drain, account, check; adds the
    fault's row to the table and returns every broken promise (none: ok)."""
    hunt_id = f"faults-{uuid.uuid4().hex[:8]}"
    rate = RATE
    if fault.overload_x is not None:  # measured on a hunt of its own, kept out of the accounting
        probe = f"capacity-{uuid.uuid4().hex[:8]}"
        probe_spots = spots(probe, 1, spacing_m=faults.SPACING_M)
        await create_hunt(stack.geo(), probe, probe_spots)
        rate = fault.overload_x * await faults.capacity(stack.target("scan"), probe, probe_spots[0])
    players, checkpoints = faults.plan(rate, WARMUP_S + fault.seconds + AFTER_S)
    cps = spots(hunt_id, checkpoints, spacing_m=faults.SPACING_M)
    await create_hunt(stack.geo(), hunt_id, cps)
    player_ids = [f"p{i:03d}-{uuid.uuid4().hex[:4]}" for i in range(players)]
    assert not stack.exited(), f"a service had died before the fault: {stack.exited()}"
    pids_before = stack.pids()
    log_offsets = {name: len(stack.log(name)) for name in SERVICES}

    phases: dict[str, float] = {}  # seconds each step took, for a failure report
    clock = time.monotonic()

    def phase(name: str) -> None:
        nonlocal clock
        now = time.monotonic()
        phases[name] = round(now - clock, 2)
        clock = now

    load = ScanLoad(stack.target("scan"), hunt_id, cps, player_ids, rate=rate).start()
    await asyncio.sleep(WARMUP_S)
    pressure: asyncio.Task[None] | None = None
    release = asyncio.Event()
    phase("warmup")
    try:
        notes = await fault.inject(stack)
        healed_at, healed_wall = time.monotonic(), time.time()
        phase("fault")
        if fault.fills:  # a full Redis stays full while the load goes on
            filled = await stack.redis_stats(fault.fills)
            pressure = asyncio.create_task(stack.press_redis(fault.fills, release))
        await asyncio.sleep(AFTER_S)
    finally:
        await load.stop()
        release.set()
        if pressure is not None:
            await pressure
    phase("load")

    drained, received_left, outbox_left = await wait_drained(db, hunt_id, timeout_s=30)
    phase("drain")
    board = stack.channel("leaderboard")
    convergence = await board_converged(board, db, hunt_id, timeout_s=15)
    phase("converge")
    if fault.overload_x is not None:
        # Past capacity the clients' refused scans keep coming back after the
        # heal: the promise counts from the last one answered.
        healed_at = max([healed_at] + [scan.ended for scan in load.scans])
    converge_s = None if convergence.at is None else convergence.at - healed_at
    last_applied = await db.fetchval(
        "SELECT extract(epoch FROM max(applied_at)) FROM scan.scans WHERE hunt_id = $1", hunt_id
    )
    drain_s = float(last_applied) - healed_wall if drained and last_applied else None
    accounting = await account(db, hunt_id, load)
    wrong_scores = await faults.scores_disagree(
        stack.channel("score"), hunt_id, await faults.truth(db, hunt_id)
    )
    report = await verify(hunt_id, dsn, dsn, board, CLIENT)
    phase("account")

    problems: list[str] = []
    if load.sent < rate * (WARMUP_S + AFTER_S) * 0.8:
        problems.append(f"the load did not run: {load.sent} scans sent")
    if not drained:
        problems.append(
            f"not drained within 30 s: {received_left} scans received, {outbox_left} outbox rows"
        )
    if load.failed:
        problems.append(f"scans that ended unacknowledged: {dict(load.failed)}")
    if accounting.lost:
        problems.append(f"lost: {accounting.lost[:5]}")
    if accounting.double:
        problems.append(f"double-awarded: {accounting.double[:5]}")
    problems += accounting.problems[:5]
    if set(accounting.outcomes) - {"unlocked"}:
        problems.append(f"scans applied but not UNLOCKED: {dict(accounting.outcomes)}")
    if wrong_scores:
        problems.append(f"GetScore differs from Postgres: {wrong_scores[:5]}")
    if not report.ok:
        problems.append(f"invariant checker: {report.problems[:5]}")
    if converge_s is None or converge_s > CONVERGE_S:
        problems.append(
            f"leaderboard did not equal Postgres within {CONVERGE_S:g} s of the heal "
            f"(converged after {converge_s}; {convergence.last_difference})"
        )
    if fault.shows == "retried" and not load.retried:
        problems.append("the fault hit no call: no scan was retried")
    if fault.shows == "deferred" and not load.deferred:
        problems.append("the fault hit no scan in flight: none was deferred")
    if fault.shows == "contained" and load.retried + load.deferred > CONTAINED * rate:
        problems.append(
            f"an error burst past the lost replica's calls: {load.retried} scans retried, "
            f"{load.deferred} deferred at {rate:g}/s ({dict(load.errors_seen)})"
        )
    exited = stack.exited()
    replaced = {n for n, pid in stack.pids().items() if pid != pids_before[n]}
    if exited:
        problems.append(f"service processes ended: {exited}")
    if replaced - {fault.restarts}:
        problems.append(f"services restarted: {sorted(replaced - {fault.restarts})}")
    health = await stack.health()
    if set(health.values()) != {"SERVING"}:
        problems.append(f"health after the fault: {health}")
    if fault.empties and not (await stack.redis_stats(fault.empties))["keys"]:
        problems.append(f"{fault.empties} wrote nothing to its Redis after it came back empty")
    if fault.fills:
        problems += await _check_fill(stack, fault.fills, notes["fill"], filled)

    row = faults.FaultRow(
        fault=fault.name if fault.overload_x is None else f"{fault.name} ({rate:.0f}/s offered)",
        sent=load.sent,
        acknowledged=len(load.acknowledged),
        deferred=load.deferred,
        retried=load.retried,
        failed=", ".join(f"{k} {v}" for k, v in sorted(load.failed.items())),
        applied=accounting.applied,
        unlocked=accounting.outcomes["unlocked"],
        lost=len(accounting.lost),
        double=len(accounting.double),
        converge_s=converge_s,
        drain_s=drain_s,
        verdict="ok" if not problems else "FAILED",
    )
    faults.TABLE.append(row)
    faults.write_table(TABLE_PATH)
    print(
        f"\n{fault.name}: {row}; errors seen {dict(load.errors_seen)}; {notes}; took {phases}",
        flush=True,
    )
    if problems:  # for whoever reads the failure: the slowest scans, what the services logged
        print("slowest scans:", *load.slowest(healed_at), sep="\n  ")
        for name in SERVICES:
            errors = _logged_errors(stack.log(name)[log_offsets[name] :])
            if errors:
                print(f"{name} logged since the fault:", *errors.most_common(8), sep="\n  ")
    return problems


async def _check_fill(stack: Stack, name: str, fill, filled: dict) -> list[str]:
    """The Redis filled up and evicted rather than refused writes (allkeys-lru),
    kept evicting while the service worked on it, and the service never met an
    out-of-memory error."""
    problems = []
    after = await stack.redis_stats(name)
    if fill.used_memory < 0.9 * fill.maxmemory or not fill.evicted_keys:
        problems.append(f"the {name} Redis was not filled to maxmemory: {fill}")
    if after["evicted_keys"] <= filled["evicted_keys"]:
        problems.append(f"the {name} Redis stopped evicting after the fill: {after}")
    if "OOM" in stack.log(name):
        problems.append(f"{name} met an OOM error instead of an eviction")
    return problems


def _logged_errors(text: str) -> Counter[str]:
    """ERROR lines and logged exceptions of a service's JSON log, by message
    and the exception's last line."""
    found: Counter[str] = Counter()
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("level") == "ERROR" or entry.get("exc"):
            last = entry.get("exc", "").strip().splitlines()[-1:] or [""]
            found[f"{entry.get('logger')}: {entry.get('msg')} | {last[0][:200]}"] += 1
    return found


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f.id)
async def test_fault(fault: Fault, stack: Stack, db: asyncpg.Pool, stack_dsn: str):
    try:
        async with asyncio.timeout(RUN_TIMEOUT_S):  # a hang fails with where it hung
            problems = await run_fault(stack, db, stack_dsn, fault)
    finally:
        if fault.fills:
            await stack.restore_maxmemory(fault.fills)
    assert not problems, problems


# -- one of two replicas lost ---------------------------------------------------------


def kill_replica(name: str) -> Fault:
    """kill -9 of one of a service's two processes: the other one serves
    alone (the callers' channels route around the dead one) until a
    supervisor has started it again."""

    async def inject(stack: Stack) -> dict:
        served = await asyncio.to_thread(_calls_served, stack, f"{name}-2")
        if not served:
            raise AssertionError(f"{name}-2 served no call before the kill: nothing was balanced")
        stack.kill(f"{name}-2")
        await asyncio.sleep(REPLICA_DOWN_S / 2)
        survivor = (await stack.health())[name]
        await asyncio.sleep(REPLICA_DOWN_S / 2)
        await stack.restart(f"{name}-2")
        if survivor != "SERVING":
            raise AssertionError(f"the {name} left alone was {survivor}, not SERVING")
        return {"served_before_kill": served, "survivor": survivor}

    return Fault(
        f"kill-replica-{name}",
        f"kill -9 one of two {name}s",
        inject,
        seconds=REPLICA_DOWN_S + 3.0,
        restarts=f"{name}-2",
        shows="contained",
    )


async def _run_on(stack: Stack, dsn: str, fault: Fault) -> list[str]:
    """`run_fault` on a stack of its own database (a pool of its own for the accounting)."""
    db = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    try:
        async with asyncio.timeout(RUN_TIMEOUT_S):
            return await run_fault(stack, db, dsn, fault)
    finally:
        await db.close()


def _calls_served(stack: Stack, instance: str) -> int:
    """Calls a process answered (its server histogram's count, health checks aside)."""
    return int(
        sum(
            value
            for sample, value in scrape_metrics(stack.metrics_ports[instance]).items()
            if sample.startswith("rpc_server_duration_seconds_count")
        )
    )


@pytest.fixture(scope="module")
async def replica_stack(pg_admin_dsn: str, pg_template: str) -> AsyncIterator[tuple[Stack, str]]:
    """Two processes of every service, on a database of their own."""
    name = f"thtest_replicas_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    async with throwaway_database(pg_admin_dsn, name, template=pg_template) as dsn:
        stack = Stack(RUN_DIR / f"replicas-{os.getpid()}", dsn, replicas=2, **STACK_ENV)
        try:
            await stack.start()
            yield stack, dsn
        finally:
            await stack.stop()


async def _outbox_quiet(db: asyncpg.Pool) -> tuple[int, int]:
    """Once score's outbox is empty: (outbox rows delivered so far over every
    score process, unlocks so far). Each new unlock writes one outbox row."""
    await eventually(
        lambda: db.fetchval("SELECT count(*) FROM score.outbox"),
        until=lambda left: left == 0,
        timeout_s=30,
        what="score's outbox to be delivered",
    )
    delivered = (await work_done(db, "score", "outbox-delivery"))[1]
    return delivered, await db.fetchval("SELECT count(*) FROM score.unlocks")


@pytest.mark.parametrize("fault", [kill_replica(name) for name in SERVICES], ids=lambda f: f.id)
async def test_replica_loss(fault: Fault, replica_stack):
    """The fault's accounting, and the outbox delivery done once per row across
    the two score processes (counted in Postgres with each acknowledged
    delivery, so a delivery cut by a kill counts nothing and is done again)."""
    stack, dsn = replica_stack
    db = await asyncpg.connect(dsn)
    try:
        delivered_before, unlocks_before = await _outbox_quiet(db)
        assert not (problems := await _run_on(stack, dsn, fault)), problems
        delivered, unlocks = await _outbox_quiet(db)
        workers = await units_by_worker(db, "score", "outbox-delivery")
    finally:
        await db.close()
    assert unlocks > unlocks_before
    assert delivered - delivered_before == unlocks - unlocks_before, workers
    assert len(workers) >= 2, f"one score process delivered every row: {workers}"


async def test_watchers_of_a_lost_replica_move_to_the_other(replica_stack):
    """WatchTop clients on both leaderboards; one leaderboard killed: its
    watchers' streams end, they watch again (the same channel, which routes
    to the live one), and every watcher sees the next scan's score."""
    stack, _ = replica_stack
    hunt_id = f"watch-{uuid.uuid4().hex[:8]}"
    cps = spots(hunt_id, 2, spacing_m=faults.SPACING_M)
    await create_hunt(stack.geo(), hunt_id, cps)
    board = leaderboard_pb2_grpc.LeaderboardServiceStub(stack.channel("leaderboard"))
    watchers = [faults.Watcher(board, hunt_id, CLIENT) for _ in range(4)]
    for watcher in watchers:  # one after another: round robin puts them on both replicas
        watcher.start()
        await watcher.first.wait()
    try:
        stack.kill("leaderboard-2")
        scan = await faults.scan_once(stack.target("scan"), hunt_id, cps[0], "p-watch")
        assert scan.outcome == scan_pb2.SCAN_OUTCOME_UNLOCKED
        await eventually(
            lambda: all(w.score_of("p-watch") == scan.total_points for w in watchers),
            timeout_s=10,
            what="every watcher, the moved ones included, to see the scan's score",
        )
        moved = sum(w.reconnects for w in watchers)
        assert moved, "no watcher was on the killed leaderboard: the test proved nothing"
    finally:
        for watcher in watchers:
            await watcher.stop()
        await stack.restart("leaderboard-2")


# -- a Postgres restart, on a Postgres of the test's own ----------------------------


@pytest.fixture(scope="module")
async def private_stack() -> AsyncIterator[tuple[Stack, PrivatePostgres, str]]:
    """A Postgres cluster of our own (so restarting it touches nobody else's)
    and a whole stack on it."""
    root = RUN_DIR / f"pg-faults-{os.getpid()}"
    postgres = PrivatePostgres(root / "data", free_port())
    await asyncio.to_thread(postgres.start)
    stack: Stack | None = None
    try:
        dsn = await create_database(postgres.dsn, "faults")
        stack = Stack(root / "stack", dsn, **STACK_ENV)
        await stack.start()
        yield stack, postgres, dsn
    finally:
        if stack is not None:
            await stack.stop()
        await asyncio.to_thread(postgres.stop)
        shutil.rmtree(root, ignore_errors=True)


async def test_postgres_restart(private_stack):
    stack, postgres, dsn = private_stack

    async def inject(stack: Stack) -> dict:
        await asyncio.to_thread(postgres.stop)  # fast shutdown: every connection is cut
        await asyncio.sleep(DOWN_S)
        await asyncio.to_thread(postgres.start)
        return {}

    fault = Fault(
        "postgres-restart", f"Postgres restarted (down {DOWN_S:g} s)", inject, shows="retried"
    )
    assert not (problems := await _run_on(stack, dsn, fault)), problems
