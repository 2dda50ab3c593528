"""One SubmitScan is one trace, received over OTLP as Jaeger would receive it."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.grpc import aio_client_interceptors
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from tests.support.env import ADMIN_TOKEN, CLIENT_TOKEN, SERVICE_TOKEN
from tests.support.hunts import create_hunt, spots
from tests.support.infra import RUN_DIR, cluster_mode
from tests.support.otlp import Receiver
from tests.support.polling import eventually
from tests.support.scans import request
from tests.support.services import scrape_metrics
from tests.support.stack import CLIENT, Stack
from treasure.scan.v1 import scan_pb2, scan_pb2_grpc


@pytest.fixture(scope="module")
async def receiver():
    running = await Receiver().start()
    yield running
    await running.stop()


@pytest.fixture(scope="module")
async def stack(stack_dsn, receiver, request):
    running = Stack(
        RUN_DIR / f"e2e-tracing-{uuid.uuid4().hex[:6]}",
        stack_dsn,
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
        OTEL_BSP_SCHEDULE_DELAY="100",
    )
    try:
        await running.start()
        yield running
    finally:
        await running.stop()


def _is_redis_span(span) -> bool:
    """A span of the Redis instrumentation: a command (args_length) or a
    pipeline (pipeline_length); both modes set these."""
    attributes = span["attributes"]
    return "db.redis.args_length" in attributes or "db.redis.pipeline_length" in attributes


async def _wait_for(receiver: Receiver, predicate, timeout_s: float = 15.0):
    await eventually(
        lambda: predicate(receiver.spans),
        timeout_s=timeout_s,
        interval_s=0.1,
        what=lambda: f"the spans (received: {[s['name'] for s in receiver.spans]})",
    )


async def test_one_scan_is_one_trace_across_four_services(stack: Stack, receiver: Receiver):
    hunt_id = f"traced-{uuid.uuid4().hex[:6]}"
    cps = spots(hunt_id, 1)
    await create_hunt(stack.geo(), hunt_id, cps)

    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: "mobile-backend"}))
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=f"127.0.0.1:{receiver.port}", insecure=True))
    )
    channel = grpc.aio.insecure_channel(
        stack.addr("scan"), interceptors=aio_client_interceptors(tracer_provider=provider)
    )
    try:
        call = scan_pb2_grpc.ScanServiceStub(channel).SubmitScan(
            request("tracy", hunt_id, cps[0], at=datetime.now(UTC)), metadata=CLIENT
        )
        reply = await call
        trace_id = dict(await call.trailing_metadata())["x-trace-id"]
    finally:
        await channel.close()
        await asyncio.to_thread(provider.force_flush)
        await asyncio.to_thread(provider.shutdown)
    assert reply.outcome == scan_pb2.SCAN_OUTCOME_UNLOCKED

    def delivered(spans) -> bool:
        # The leaderboard's SubmitScores server span, not just any of its spans:
        # its Redis spans end (and are exported) before the server span does.
        linked = [s for s in spans if any(t == trace_id for t, _ in s["links"])]
        return bool(linked) and any(
            s["service"] == "treasure-leaderboard"
            and s["trace_id"] == linked[0]["trace_id"]
            and s["name"].endswith("SubmitScores")
            for s in spans
        )

    def whole(spans) -> bool:
        # Each process exports its spans in its own batches: wait until every
        # parent of the scan's spans has arrived too.
        in_trace = {s["span_id"]: s for s in spans if s["trace_id"] == trace_id}
        return all(not s["parent_id"] or s["parent_id"] in in_trace for s in in_trace.values())

    await _wait_for(
        receiver,
        lambda spans: (
            delivered(spans)
            and any(
                s["service"] == "treasure-score" and s["name"].endswith("/Unlock") for s in spans
            )
            and whole(spans)
        ),
    )
    spans = receiver.spans
    in_trace = [s for s in spans if s["trace_id"] == trace_id]
    by_id = {s["span_id"]: s for s in in_trace}
    services = {s["service"] for s in in_trace}
    assert {"mobile-backend", "treasure-scan", "treasure-geo", "treasure-score"} <= services

    roots = [s for s in in_trace if not s["parent_id"]]
    assert len(roots) == 1 and roots[0]["service"] == "mobile-backend"
    for span in in_trace:  # one tree: every parent is in the trace
        assert not span["parent_id"] or span["parent_id"] in by_id, span["name"]

    def server(service: str, method: str):
        found = [
            s
            for s in in_trace
            if s["service"] == service and s["name"].endswith(method) and s["kind"] == 2
        ]
        assert found, f"no server span {service} {method}"
        return found[0]

    scan_server = server("treasure-scan", "SubmitScan")
    geo_server = server("treasure-geo", "CheckIn")
    score_server = server("treasure-score", "Unlock")
    assert by_id[scan_server["parent_id"]]["service"] == "mobile-backend"
    assert by_id[geo_server["parent_id"]]["service"] == "treasure-scan"
    assert by_id[score_server["parent_id"]]["service"] == "treasure-scan"
    for span in (scan_server, geo_server, score_server):
        assert span["attributes"]["rpc.system"] == "grpc"
        assert span["attributes"]["rpc.service"].startswith("treasure.")

    # what the scan and the unlock are, on their server spans
    assert scan_server["attributes"]["hunt.id"] == hunt_id
    assert scan_server["attributes"]["player.id"] == "tracy"
    assert scan_server["attributes"]["scan.id"] == reply.scan_id
    assert scan_server["attributes"]["scan.outcome"] == "unlocked"
    assert score_server["attributes"]["hunt.id"] == hunt_id
    assert score_server["attributes"]["player.id"] == "tracy"
    assert score_server["attributes"]["unlock.outcome"] == "unlocked"

    for service in ("treasure-scan", "treasure-score"):
        pg = [
            s
            for s in in_trace
            if s["service"] == service and s["attributes"].get("db.system") == "postgresql"
        ]
        assert pg and all(s["attributes"].get("db.statement") for s in pg), service
    redis_spans = [s for s in in_trace if _is_redis_span(s)]
    assert {"treasure-scan", "treasure-geo", "treasure-score"} <= {
        s["service"] for s in redis_spans
    }
    assert all(s["attributes"].get("db.statement") for s in redis_spans)
    assert any(
        s["service"] == "treasure-score" and "EVALSHA" in s["name"].upper() for s in redis_spans
    )
    assert all(s["attributes"].get("db.system") == "redis" for s in redis_spans)
    # The peer (net.peer.*) is known on standalone Redis only: on a cluster a
    # command's node is chosen after its span starts (libs.telemetry).
    if not cluster_mode():
        assert all(s["attributes"].get("net.peer.port") for s in redis_spans)

    deliver = next(s for s in spans if any(t == trace_id for t, _ in s["links"]))
    assert deliver["service"] == "treasure-score"
    assert any(
        s["service"] == "treasure-leaderboard"
        and s["trace_id"] == deliver["trace_id"]
        and s["name"].endswith("SubmitScores")
        for s in spans
    )

    for span in spans:  # no token anywhere in a span
        text = repr(span)
        for token in (CLIENT_TOKEN, SERVICE_TOKEN, ADMIN_TOKEN):
            assert token not in text


def _sum(values: dict[str, float], prefix: str) -> float:
    return sum(v for k, v in values.items() if k.startswith(prefix))


async def test_metrics_exist_and_move_after_a_scan(stack: Stack):
    hunt_id = f"metered-{uuid.uuid4().hex[:6]}"
    cps = spots(hunt_id, 1)
    await create_hunt(stack.geo(), hunt_id, cps)
    before = {
        name: await asyncio.to_thread(scrape_metrics, port)
        for name, port in stack.metrics_ports.items()
    }
    reply = await stack.scan().SubmitScan(
        request("metered", hunt_id, cps[0], at=datetime.now(UTC)), metadata=CLIENT
    )
    assert reply.outcome == scan_pb2.SCAN_OUTCOME_UNLOCKED
    await asyncio.sleep(6)  # gauges refresh every few seconds
    after = {
        name: await asyncio.to_thread(scrape_metrics, port)
        for name, port in stack.metrics_ports.items()
    }

    for service, method in (
        ("scan", "SubmitScan"),
        ("geo", "CheckIn"),
        ("score", "Unlock"),
        ("leaderboard", "SubmitScores"),
    ):
        key = f'rpc_server_duration_seconds_count{{code="OK",method="{method}"}}'
        assert after[service].get(key, 0) > before[service].get(key, 0), (service, method)
    for service in stack.metrics_ports:
        assert after[service]["redis_maxmemory_bytes"] > 0
        assert after[service]["redis_used_memory_bytes"] > 0
    assert _sum(after["geo"], "cache_requests_total") > _sum(before["geo"], "cache_requests_total")
    assert "scan_relay_backlog" in after["scan"]
    assert any(k.startswith("score_outbox") for k in after["score"])
    assert any("tile" in k and "age" in k for k in after["geo"])
