"""A raw-bytes upstream for transparency tests: it records what reaches it and answers with
headers, trailers, statuses and rich error details that the proxy must pass unchanged.

With reflection=True it also serves gRPC reflection describing its methods (a real file
descriptor in the default pool, as a generated *_pb2 module would add), so a sidecar learns their
kinds the way it does for real apps and forwards them on the typed path; without it, the kinds
are unknown and calls take the generic stream-stream path."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool
from google.rpc import (  # type: ignore[import-untyped, unused-ignore]
    code_pb2,
    error_details_pb2,
    status_pb2,
)
from grpc_status import rpc_status  # type: ignore[import-untyped, unused-ignore]

from grpcmesh.reflection import enable_reflection

SERVICE = "test.v1.Probe"
# (client streaming, server streaming) of each method, as the descriptor describes them.
METHODS = {"Unary": (False, False), "ServerStream": (False, True),
           "ClientStream": (True, False), "Bidi": (True, True), "Fail": (False, False),
           "FailStream": (False, True), "FailUpload": (True, False), "Slow": (False, False),
           "SlowStream": (False, True), "Big": (False, False)}
_PROTO_FILE = "tests/probe/v1/probe.proto"
HEADERS = (("x-header", "h"), ("x-header-bin", b"\x00\xff"))
TRAILERS = (("x-trailer", "t"), ("x-trailer-bin", b"\x01\x02"))


def rich_status() -> status_pb2.Status:
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.BadRequest(field_violations=[
        error_details_pb2.BadRequest.FieldViolation(field="name", description="too short")]))
    return status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message="name is too short",
                             details=[detail])


def _describe() -> None:
    """Add the probe's proto file (one message type; the probe never parses it) to the default
    descriptor pool, once per process."""
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(_PROTO_FILE)
        return
    except KeyError:
        pass
    package, _, name = SERVICE.rpartition(".")
    file = descriptor_pb2.FileDescriptorProto(name=_PROTO_FILE, package=package, syntax="proto3")
    file.message_type.add(name="Bytes").field.add(
        name="data", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_BYTES,
        label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    service = file.service.add(name=name)
    for method, (client_streaming, server_streaming) in METHODS.items():
        service.method.add(name=method, input_type=f".{package}.Bytes",
                           output_type=f".{package}.Bytes", client_streaming=client_streaming,
                           server_streaming=server_streaming)
    pool.AddSerializedFile(file.SerializeToString())


class Probe:
    def __init__(self, reflection: bool = False) -> None:
        self.reflection = reflection
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
        await context.send_initial_metadata(HEADERS)
        parts = [r async for r in requests]
        context.set_trailing_metadata(TRAILERS)
        return b"|".join(parts)

    async def bidi(self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
                   ) -> AsyncIterator[bytes]:
        self._seen(context)
        await context.send_initial_metadata(HEADERS)
        async for request in requests:
            yield b"re:" + request
        context.set_trailing_metadata(TRAILERS)

    async def fail(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        self._seen(context)
        await context.abort_with_status(rpc_status.to_status(rich_status()))
        raise AssertionError("unreachable")

    async def fail_stream(self, request: bytes, context: grpc.aio.ServicerContext
                          ) -> AsyncIterator[bytes]:
        """One message, then the rich error status."""
        self._seen(context)
        yield b"partial"
        await context.abort_with_status(rpc_status.to_status(rich_status()))

    async def fail_upload(self, requests: AsyncIterator[bytes],
                          context: grpc.aio.ServicerContext) -> bytes:
        """Read every request, then answer with the rich error status."""
        self._seen(context)
        async for _ in requests:
            pass
        await context.abort_with_status(rpc_status.to_status(rich_status()))
        raise AssertionError("unreachable")

    async def _wait_for_cancel(self) -> None:
        self.started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise

    async def slow(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        self._seen(context)
        await self._wait_for_cancel()
        return b"late"

    async def slow_stream(self, request: bytes, context: grpc.aio.ServicerContext
                          ) -> AsyncIterator[bytes]:
        """One message, then nothing until cancelled."""
        self._seen(context)
        yield b"first"
        await self._wait_for_cancel()

    async def big(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        self._seen(context)
        return b"x" * int(request.decode())

    async def start(self) -> str:
        kinds = {(False, False): grpc.unary_unary_rpc_method_handler,
                 (False, True): grpc.unary_stream_rpc_method_handler,
                 (True, False): grpc.stream_unary_rpc_method_handler,
                 (True, True): grpc.stream_stream_rpc_method_handler}
        behaviours = {"Unary": self.unary, "ServerStream": self.server_stream,
                      "ClientStream": self.client_stream, "Bidi": self.bidi,
                      "Fail": self.fail, "FailStream": self.fail_stream,
                      "FailUpload": self.fail_upload, "Slow": self.slow,
                      "SlowStream": self.slow_stream, "Big": self.big}
        handlers = {name: kinds[METHODS[name]](behaviour)
                    for name, behaviour in behaviours.items()}
        self.server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler(SERVICE, handlers)])
        if self.reflection:
            _describe()
            enable_reflection(self.server, [SERVICE])
        port = self.server.add_insecure_port("127.0.0.1:0")
        self.address = f"127.0.0.1:{port}"
        await self.server.start()
        return self.address

    async def stop(self) -> None:
        await self.server.stop(0)
