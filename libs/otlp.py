"""Span export at a fraction of its CPU: OTLP/gRPC with a faster encoder.

OpenTelemetry's OTLP exporter builds one protobuf object per span, attribute
and value before serializing them: about 100 µs of CPU per span on this
machine, as much as creating and ending the span, and the largest single cost
of exporting every span (README, "Benchmarks"). `encode_request` writes the
same ExportTraceServiceRequest straight in the protobuf wire format, in about
a fifth of that time. What it does not handle quickly (events, array or map
attributes) it hands to the library's own span encoder, so any span is
encoded, and the same message comes out (tests/unit/test_otlp.py compares it
with the library's on every kind of span the services make).

`SpanExporter` is the library's `OTLPSpanExporter` (its channel, retries,
timeouts, compression and settings) sending those bytes. It depends on the
library's `_stub`/`_client` hooks, pinned with the library
(opentelemetry-exporter-otlp-proto-grpc).
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.common._internal import (
    _encode_instrumentation_scope,
    _encode_resource,
)
from opentelemetry.exporter.otlp.proto.common._internal.trace_encoder import _encode_span
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.sdk.trace import ReadableSpan

_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

_pack_fixed64 = struct.Struct("<Q").pack
_pack_fixed32 = struct.Struct("<I").pack
_pack_double = struct.Struct("<d").pack

#: SpanFlags: the context says whether its parent is remote, and whether it is.
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200


def _varint(value: int) -> bytes:
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: int, payload: bytes) -> bytes:
    """A length-delimited field (`tag` = field number << 3 | 2)."""
    return _varint(tag) + _varint(len(payload)) + payload


def _value(value: Any) -> bytes | None:
    """An AnyValue, or None when the value is not a scalar."""
    if isinstance(value, str):
        return _field(0x0A, value.encode())
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):
        return b"\x18" + _varint(value if value >= 0 else value + (1 << 64))
    if isinstance(value, float):
        return b"\x21" + _pack_double(value)
    if isinstance(value, bytes):
        return _field(0x3A, value)
    return None


@functools.lru_cache(maxsize=8192, typed=True)
def _key_value(tag: int, key: str, value: Any) -> bytes | None:
    """The KeyValue field `tag` of one attribute, or None when its value is
    not a scalar. Cached: most recur from span to span (rpc.system, a method,
    an SQL statement); `typed` keeps 1, True and 1.0 apart."""
    scalar = _value(value)
    if scalar is None:
        return None
    return _field(tag, _field(0x0A, key.encode()) + _field(0x12, scalar))


def _attributes(tag: int, attributes: Any) -> bytes | None:
    """The repeated KeyValue field `tag`, or None when a value is not a scalar."""
    if not attributes:
        return b""
    out = []
    for key, value in attributes.items():
        try:
            encoded = _key_value(tag, key, value)
        except TypeError:  # not hashable: not a scalar
            return None
        if encoded is None:
            return None
        out.append(encoded)
    return b"".join(out)


@functools.lru_cache(maxsize=8192)
def _name(name: str) -> bytes:
    """A span's name field (names recur)."""
    return _field(0x2A, name.encode())


def _flags(parent: Any) -> bytes:
    flags = _HAS_IS_REMOTE | (_IS_REMOTE if parent is not None and parent.is_remote else 0)
    return _pack_fixed32(flags)


def encode_span(span: ReadableSpan) -> bytes:
    """One Span message, as the library's encoder would serialize it."""
    attributes = _attributes(0x4A, span.attributes)
    context = span.get_span_context()
    if attributes is None or span.events or context is None:
        return _encode_span(span).SerializeToString()
    out = [
        b"\x0a\x10",
        context.trace_id.to_bytes(16, "big"),
        b"\x12\x08",
        context.span_id.to_bytes(8, "big"),
    ]
    if context.trace_state:
        out.append(
            _field(0x1A, ",".join(f"{k}={v}" for k, v in context.trace_state.items()).encode())
        )
    parent = span.parent
    if parent is not None:
        out += (b"\x22\x08", parent.span_id.to_bytes(8, "big"))
    out.append(_name(span.name))
    out.append(b"\x30" + _varint(span.kind.value + 1))  # SPAN_KIND_INTERNAL is 1 on the wire
    out += (
        b"\x39",
        _pack_fixed64(span.start_time or 0),
        b"\x41",
        _pack_fixed64(span.end_time or 0),
    )
    out.append(attributes)
    if span.dropped_attributes:
        out.append(b"\x50" + _varint(span.dropped_attributes))
    if span.dropped_events:
        out.append(b"\x60" + _varint(span.dropped_events))
    for link in span.links:
        link_attributes = _attributes(0x22, link.attributes)
        if link_attributes is None:
            return _encode_span(span).SerializeToString()
        body = (
            b"\x0a\x10"
            + link.context.trace_id.to_bytes(16, "big")
            + b"\x12\x08"
            + link.context.span_id.to_bytes(8, "big")
            + link_attributes
            + (b"\x28" + _varint(link.dropped_attributes) if link.dropped_attributes else b"")
            + b"\x35"
            + _flags(link.context)
        )
        out.append(_field(0x6A, body))
    if span.dropped_links:
        out.append(b"\x70" + _varint(span.dropped_links))
    status = span.status
    body = b""
    if status.description:
        body += _field(0x12, status.description.encode())
    if status.status_code.value:
        body += b"\x18" + _varint(status.status_code.value)
    out.append(_field(0x7A, body))
    out += (b"\x85\x01", _flags(parent))  # field 16, fixed32
    return b"".join(out)


def encode_request(spans: Sequence[ReadableSpan]) -> bytes:
    """An ExportTraceServiceRequest of `spans`, serialized: grouped by
    resource, then by instrumentation scope, as the library groups them."""
    groups: dict[Any, dict[Any, list[bytes]]] = {}
    for span in spans:
        scopes = groups.setdefault(span.resource, {})
        scopes.setdefault(span.instrumentation_scope or None, []).append(encode_span(span))
    out = []
    for resource, scopes in groups.items():
        body = [_field(0x0A, _encode_resource(resource).SerializeToString())]
        for scope, encoded in scopes.items():
            scope_body = _field(0x0A, _encode_instrumentation_scope(scope).SerializeToString())
            scope_body += b"".join(_field(0x12, span) for span in encoded)
            if scope is not None and scope.schema_url:
                scope_body += _field(0x1A, scope.schema_url.encode())
            body.append(_field(0x12, scope_body))
        if resource.schema_url:
            body.append(_field(0x1A, resource.schema_url.encode()))
        out.append(_field(0x0A, b"".join(body)))
    return b"".join(out)


class _BytesStub:
    """TraceService.Export taking the request already serialized."""

    def __init__(self, channel: Any) -> None:
        self.Export = channel.unary_unary(
            _EXPORT,
            request_serializer=None,  # bytes as they are
            response_deserializer=trace_service_pb2.ExportTraceServiceResponse.FromString,
        )


class SpanExporter(OTLPSpanExporter):
    """OTLPSpanExporter with `encode_request` as its encoder."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stub = _BytesStub  # also used when the library opens its channel again
        self._client = _BytesStub(self._channel)  # type: ignore[assignment]  # the library's own hook

    def _translate_data(self, data: Sequence[ReadableSpan]) -> Any:
        return encode_request(data)
