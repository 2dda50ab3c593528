"""Serving a gRPC servicer double on a free loopback port."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

import grpc


@contextlib.asynccontextmanager
async def serve(
    add_to_server: Callable[[object, grpc.aio.Server], None], servicer: object
) -> AsyncIterator[str]:
    """`servicer` (registered with its generated `add_*_to_server`) on a free
    port until the block exits; yields its address."""
    server = grpc.aio.server()
    add_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(0)
