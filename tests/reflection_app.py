"""An app that serves Echo's descriptors through reflection under one name only, for
tests/integration/test_reflection.py: `python -m tests.reflection_app v1alpha|v1|none`.

It runs in its own process, as users' apps do: in the test's own process grpcio's race
(grpc/grpc#36066) hardly ever shows. It prints its address on one line, then serves until its
stdin closes (the test ends, however it ends)."""
from __future__ import annotations

import asyncio
import sys

import grpc
from grpc_reflection.v1alpha import reflection
from grpc_reflection.v1alpha import reflection_pb2 as rpb

from generated.grpcmesh.example.v1 import echo_pb2

ECHO = echo_pb2.DESCRIPTOR.services_by_name["Echo"].full_name
V1 = "grpc.reflection.v1.ServerReflection"


def serve_v1_only(server: grpc.aio.Server, service_names: list[str]) -> None:
    """grpcio-reflection's servicer under the v1 name only, as a newer server might serve it."""
    servicer = reflection.aio.ReflectionServicer(service_names)
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=rpb.ServerReflectionRequest.FromString,
        response_serializer=rpb.ServerReflectionResponse.SerializeToString)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        V1, {"ServerReflectionInfo": handler})])


async def main(version: str) -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    if version == "v1alpha":  # what every Python app serves: grpcio-reflection as documented
        reflection.enable_server_reflection([ECHO, reflection.SERVICE_NAME], server)
    elif version == "v1":
        serve_v1_only(server, [ECHO, V1])
    elif version != "none":
        raise SystemExit(f"unknown reflection version {version!r}: expected v1alpha, v1, none")
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"127.0.0.1:{port}", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # returns at EOF
    await server.stop(0)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
