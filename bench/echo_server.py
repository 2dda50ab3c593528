"""The floor of `make bench`: a bare grpc.aio echo server on this machine,
same runtime (uvloop) and no work behind it. `python -m bench.echo_server PORT`."""

from __future__ import annotations

import asyncio
import sys

import grpc
import uvloop


async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


async def serve(port: int) -> None:
    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(echo)  # bytes in, bytes out
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("bench.Echo", {"Echo": handler}),)
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    try:
        uvloop.run(serve(int(sys.argv[1])))
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass
