"""A raw-bytes upstream for transparency tests: it records what reaches it and answers with
headers, trailers, statuses and rich error details that the proxy must pass unchanged."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

SERVICE = "test.v1.Probe"
HEADERS = (("x-header", "h"), ("x-header-bin", b"\x00\xff"))
TRAILERS = (("x-trailer", "t"), ("x-trailer-bin", b"\x01\x02"))


def rich_status() -> status_pb2.Status:
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.BadRequest(field_violations=[
        error_details_pb2.BadRequest.FieldViolation(field="name", description="too short")]))
    return status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message="name is too short",
                             details=[detail])


class Probe:
    def __init__(self) -> None:
        self.metadata: list[tuple[tuple[str, Any], ...]] = []
        self.time_remaining: list[float | None] = []
        self.cancelled = asyncio.Event()
        self.started = asyncio.Event()
        self.server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        self.address = ""

    def _seen(self, context: grpc.aio.ServicerContext) -> None:
        self.metadata.append(tuple((m.key, m.value) for m in context.invocation_metadata()))
        self.time_remaining.append(context.time_remaining())

    async def unary(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        self._seen(context)
        await context.send_initial_metadata(HEADERS)
        context.set_trailing_metadata(TRAILERS)
        return b"echo:" + request

    async def server_stream(self, request: bytes, context: grpc.aio.ServicerContext
                            ) -> AsyncIterator[bytes]:
        self._seen(context)
        await context.send_initial_metadata(HEADERS)
        for i in range(3):
            yield request + str(i).encode()
        context.set_trailing_metadata(TRAILERS)

    async def client_stream(self, requests: AsyncIterator[bytes],
                            context: grpc.aio.ServicerContext) -> bytes:
        self._seen(context)
        parts = [r async for r in requests]
        context.set_trailing_metadata(TRAILERS)
        return b"|".join(parts)

    async def bidi(self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
                   ) -> AsyncIterator[bytes]:
        self._seen(context)
        async for request in requests:
            yield b"re:" + request

    async def fail(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        self._seen(context)
        await context.abort_with_status(rpc_status.to_status(rich_status()))
        raise AssertionError("unreachable")

    async def slow(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        self._seen(context)
        self.started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return b"late"

    async def big(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        self._seen(context)
        return b"x" * int(request.decode())

    async def start(self) -> str:
        u, s = grpc.unary_unary_rpc_method_handler, grpc.unary_stream_rpc_method_handler
        c, b = grpc.stream_unary_rpc_method_handler, grpc.stream_stream_rpc_method_handler
        handlers = {"Unary": u(self.unary), "ServerStream": s(self.server_stream),
                    "ClientStream": c(self.client_stream), "Bidi": b(self.bidi),
                    "Fail": u(self.fail), "Slow": u(self.slow), "Big": u(self.big)}
        self.server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler(SERVICE, handlers)])
        port = self.server.add_insecure_port("127.0.0.1:0")
        self.address = f"127.0.0.1:{port}"
        await self.server.start()
        return self.address

    async def stop(self) -> None:
        await self.server.stop(0)
