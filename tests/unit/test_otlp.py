"""libs.otlp's encoder writes the very ExportTraceServiceRequest the
OpenTelemetry exporter's encoder builds, for every kind of span: compared
message by message after parsing both."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

from libs.otlp import encode_request


def _provider(service: str, limits: SpanLimits | None = None):
    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": service}), span_limits=limits
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def _same(spans) -> None:
    ours = ExportTraceServiceRequest.FromString(encode_request(spans))
    theirs = encode_spans(spans)
    assert ours == theirs
    assert sum(len(s.spans) for r in ours.resource_spans for s in r.scope_spans) == len(spans)


def test_every_kind_of_span_the_services_make_encodes_as_the_library_does():
    provider, exporter = _provider("treasure-scan")
    tracer = provider.get_tracer("libs.rpc", schema_url="https://opentelemetry.io/schemas/1.11.0")
    other = provider.get_tracer("opentelemetry.instrumentation.asyncpg")
    remote = SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState([("vendor", "x1")]),
    )
    parent = trace.set_span_in_context(NonRecordingSpan(remote))
    attributes = {
        "rpc.system": "grpc",
        "rpc.method": "CheckIn",
        "rpc.grpc.status_code": 0,
        "negative": -7,
        "big": 2**62,
        "ratio": 0.25,
        "flag": True,
        "off": False,
        "empty": "",
        "unicode": "Lisboa ü 東京",
        "raw": b"\x00\x01",
    }
    with tracer.start_as_current_span(
        "treasure.scan.v1.ScanService/SubmitScan",
        context=parent,
        kind=trace.SpanKind.SERVER,
        attributes=attributes,
    ) as server:
        for kind in trace.SpanKind:
            with tracer.start_as_current_span(f"kind {kind.name}", kind=kind):
                pass
        with other.start_as_current_span("INSERT", attributes={"db.statement": "INSERT ..."}):
            pass
        with tracer.start_as_current_span(
            "scan.log.insert_batch",
            links=[
                trace.Link(server.get_span_context(), {"batch.member": 1}),
                trace.Link(remote),
            ],
            attributes={"batch.size": 3},
        ) as batch:
            batch.set_status(trace.Status(trace.StatusCode.ERROR, "UNAVAILABLE"))
        with tracer.start_as_current_span("ok") as ok:
            ok.set_status(trace.StatusCode.OK)
        # what the fast path hands to the library's encoder
        with tracer.start_as_current_span("with an event") as evented:
            evented.add_event("retry", {"attempt": 2})
        with tracer.start_as_current_span("with an array", attributes={"ids": ("a", "b")}):
            pass
    spans = exporter.get_finished_spans()
    assert len(spans) == 11
    _same(spans)
    for span in spans:  # and one at a time
        _same([span])


def test_dropped_counts_and_several_resources_and_scopes():
    limits = SpanLimits(max_span_attributes=2, max_links=1, max_events=1)
    first, first_spans = _provider("treasure-geo", limits)
    second, second_spans = _provider("treasure-score")
    tracer = first.get_tracer("a")
    context = SpanContext(trace_id=1, span_id=2, is_remote=False)
    with tracer.start_as_current_span(
        "crowded",
        attributes={"a": 1, "b": 2, "c": 3},
        links=[trace.Link(context), trace.Link(context)],
    ):
        pass
    with first.get_tracer("b").start_as_current_span("other scope"):
        pass
    with second.get_tracer("a").start_as_current_span("other resource"):
        pass
    spans = list(first_spans.get_finished_spans()) + list(second_spans.get_finished_spans())
    assert spans[0].dropped_attributes == 1 and spans[0].dropped_links == 1
    _same(spans)


def test_the_attribute_cache_does_not_mix_values_of_equal_hash():
    provider, exporter = _provider("treasure-scan")
    tracer = provider.get_tracer("t")
    for value in (1, True, 1.0, "1", 0, False, 0.0):  # 1 == True == 1.0 in a dict key
        with tracer.start_as_current_span("s", attributes={"v": value}):
            pass
    spans = exporter.get_finished_spans()
    _same(spans)
    values = [
        s.attributes[0].value
        for r in ExportTraceServiceRequest.FromString(encode_request(spans)).resource_spans
        for scope in r.scope_spans
        for s in scope.spans
    ]
    assert [v.WhichOneof("value") for v in values] == [
        "int_value", "bool_value", "double_value", "string_value",
        "int_value", "bool_value", "double_value",
    ]  # fmt: skip
