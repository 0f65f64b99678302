#!/usr/bin/env python3
"""The floor of a grpc.aio proxy: a bare raw-bytes forwarder, the reference configuration of
scripts/bench_proxy.py.

One generic handler returns a cached handler per method (unary for methods whose name ends in
"Unary", stream-stream otherwise), no (de)serializers, no routing, no metadata or deadline
handling, one upstream channel, on uvloop like the sidecar. Whatever grpcmesh costs beyond this is grpcmesh's own.

  python scripts/bare_proxy.py LISTEN UPSTREAM   (prints {"proxy": "HOST:PORT"} when ready)
"""
from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

import grpc
import uvloop
from reference_proxy import announce_until_signal


class Bare(grpc.GenericRpcHandler):
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._channel = channel
        self._handlers: dict[str, Any] = {}

    def service(self, details: grpc.HandlerCallDetails) -> Any:
        method: str = details.method
        handler = self._handlers.get(method)
        if handler is None:
            if method.endswith("Unary"):
                call = self._channel.unary_unary(method)

                async def unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
                    response: bytes = await call(request)
                    return response
                handler = grpc.unary_unary_rpc_method_handler(unary)
            else:
                stream = self._channel.stream_stream(method)

                async def bidi(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
                               ) -> AsyncIterator[bytes]:
                    async for response in stream(requests):
                        yield response
                handler = grpc.stream_stream_rpc_method_handler(bidi)
            self._handlers[method] = handler
        return handler


async def main(listen: str, upstream: str) -> None:
    channel = grpc.aio.insecure_channel(upstream)
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers([Bare(channel)])
    port = server.add_insecure_port(listen)
    await server.start()
    await announce_until_signal(listen.rpartition(":")[0], port)
    await server.stop(0)


if __name__ == "__main__":
    if os.environ.get("BARE_LOOP") == "asyncio":  # bench_proxy's bare-asyncio: uvloop's gain
        asyncio.run(main(sys.argv[1], sys.argv[2]))
    else:
        uvloop.run(main(sys.argv[1], sys.argv[2]))
