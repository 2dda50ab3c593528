"""Tracing: one TracerProvider per service process.

Spans are exported with OTLP/gRPC when an endpoint (or an exporter) is
configured; the standard OTEL_TRACES_SAMPLER settings then choose sampling
(every span by default), and Redis (`redis.asyncio`) and asyncpg are
instrumented process-wide, once. With nothing to export to (and no
OTEL_TRACES_SAMPLER), spans are not recorded and the libraries are not
instrumented: spans still carry trace ids, for logs and the `x-trace-id`
trailer, but cost no attributes, timing or wrappers (about 0.5 ms of CPU per
scan across the services; README, "Benchmarks"). Such a service passes its
calls' trace context on as not sampled, so the services it calls do not
record them either: give every service the endpoint, or none.
"""

from __future__ import annotations

import logging
from urllib.parse import urlparse

from opentelemetry import trace
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import Span
from redis.asyncio.cluster import ClusterPipeline, RedisCluster

log = logging.getLogger(__name__)


class Telemetry:
    """The tracer provider of a service and its tracer."""

    def __init__(
        self,
        service_name: str,
        otlp_endpoint: str = "",
        exporter: SpanExporter | None = None,
        *,
        sampler_configured: bool = False,
    ) -> None:
        """`sampler_configured`: OTEL_TRACES_SAMPLER is set (then spans are
        recorded as it says, exported or not)."""
        self.service_name = service_name
        if exporter is None and otlp_endpoint:
            exporter = _otlp_exporter(otlp_endpoint)
        records = exporter is not None or sampler_configured
        # sampler None: the SDK's, from OTEL_TRACES_SAMPLER (every span by default)
        self.provider = TracerProvider(
            resource=Resource.create({SERVICE_NAME: service_name}),
            sampler=None if records else ALWAYS_OFF,
        )
        if exporter is not None:
            self.provider.add_span_processor(BatchSpanProcessor(exporter))
            log.info("exporting spans", extra={"otlp_endpoint": otlp_endpoint or "custom"})
        self.tracer = self.provider.get_tracer(service_name)
        if records:
            _instrument_libraries(self.provider)

    def shutdown(self) -> None:
        """Flushes and stops export. Blocking: call it off the event loop."""
        self.provider.shutdown()


def _otlp_exporter(endpoint: str) -> SpanExporter:
    """OTLP/gRPC to `endpoint`, with libs.otlp's encoder (a third of the
    library encoder's CPU per span, the same messages)."""
    from libs.otlp import SpanExporter as OtlpExporter

    parsed = urlparse(endpoint if "://" in endpoint else f"http://{endpoint}")
    insecure = parsed.scheme != "https"
    return OtlpExporter(endpoint=f"{parsed.hostname}:{parsed.port or 4317}", insecure=insecure)


_instrumented = False


def _instrument_libraries(provider: TracerProvider) -> None:
    """Redis and asyncpg instrumentation patch their libraries process-wide; the
    first provider wins (a process runs one service outside tests)."""
    global _instrumented
    if _instrumented:
        return
    _instrumented = True
    RedisInstrumentor().instrument(
        tracer_provider=provider,
        request_hook=_redis_cluster_request,
        response_hook=_redis_cluster_response,
    )
    AsyncPGInstrumentor().instrument(tracer_provider=provider)


def _redis_cluster_attributes(span: Span, client: object) -> None:
    """The Redis instrumentation takes db.system and the peer from
    `client.connection_pool`, which a RedisCluster (and its pipeline) does not
    have; without this its spans would not say they are Redis spans. The peer
    is left out: a command's node is chosen after the span starts."""
    if span.is_recording() and isinstance(client, (RedisCluster, ClusterPipeline)):
        span.set_attribute("db.system", "redis")


def _redis_cluster_request(span: Span, client: object, _args: object, _kwargs: object) -> None:
    _redis_cluster_attributes(span, client)  # commands (pipelines get no request hook)


def _redis_cluster_response(span: Span, client: object, _response: object) -> None:
    _redis_cluster_attributes(span, client)  # pipelines, and commands again (idempotent)


def current_trace_id() -> str:
    """The current trace id as 32 hex digits, or "" outside a span."""
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else ""
