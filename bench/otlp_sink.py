"""An OTLP/gRPC trace receiver that counts what it is sent and keeps nothing:
where the services export their spans in the traced runs of `make bench`
(Jaeger's collector would take them here). Its own process, like Jaeger.

    python -m bench.otlp_sink PORT COUNT_FILE

On SIGTERM it writes {"spans": N, "exports": M} to COUNT_FILE and exits.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import grpc
import uvloop
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


class Sink(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.spans = 0
        self.exports = 0

    async def Export(self, request, context):
        self.exports += 1
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                self.spans += len(scope_spans.spans)
        return trace_service_pb2.ExportTraceServiceResponse()


async def serve(port: int) -> dict[str, int]:
    sink = Sink()
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 << 20)])
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(sink, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1.0)
    return {"spans": sink.spans, "exports": sink.exports}


if __name__ == "__main__":
    counts = uvloop.run(serve(int(sys.argv[1])))
    Path(sys.argv[2]).write_text(json.dumps(counts))
